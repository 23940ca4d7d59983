"""The control room's web side: the HTTP API and the fleet and node pages of `corona-control serve`.

Data flow of one request: server.py (sockets, limits, headers) -> routes.py (who may call what)
-> api.py / login.py / pages.py (one answer each) -> the store. Everything a node sent is
untrusted text: the API returns it as JSON only, and the pages put it in the DOM as text.
"""
