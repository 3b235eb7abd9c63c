"""Tools on top of the service: the demo district and the sync simulator. They call the same
service functions as the routes; nothing in the core imports them."""
