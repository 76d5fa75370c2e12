"""Services tie store, media, formats, ml and jobs together; the CLI and API stay thin over them."""
