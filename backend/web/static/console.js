// The console's few behaviours; no inline script anywhere (the pages' CSP allows none).
"use strict";
document.addEventListener("change", function (event) {
  // A "select all" box: <input type="checkbox" data-select-all="name"> ticks every box of that name in its form.
  var box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
  var form = box.form;
  if (!form) return;
  form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]').forEach(function (other) {
    other.checked = box.checked;
  });
});
document.addEventListener("submit", function (event) {
  // <form data-confirm="…">: asks before sending.
  var form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
}, true);
