"""Where a contact's data comes from: each source names its parts and fetches them."""
