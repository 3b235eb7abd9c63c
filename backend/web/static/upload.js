// Drag and drop onto a file input: <div data-dropzone="NAME"> holding <input type="file" name="NAME">.
// Without script the input still works; this only lets a file be dropped on the whole box.
"use strict";
document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
  var input = zone.querySelector('input[type="file"][name="' + zone.dataset.dropzone + '"]');
  var shown = zone.querySelector(".dropped");
  if (!input) return;
  function show() {
    if (shown) shown.textContent = input.files && input.files.length ? input.files[0].name : "";
  }
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
  input.addEventListener("change", show);
});
