"""The API's routers, one module per resource; each route is thin (parse, call a service
function, return a read schema)."""
