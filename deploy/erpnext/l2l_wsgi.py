"""WSGI entry point that serves one Frappe site whatever the Host header says.

Frappe picks a request's site from its Host header (or X-Frappe-Site-Name); plain
http://127.0.0.1:PORT would then look for a site named "127.0.0.1". Setting frappe.app._site
(what `bench serve --site` does) pins every request to L2L_ERPNEXT_SITE.

    cd BENCH/sites && L2L_ERPNEXT_SITE=l2l.localhost gunicorn --pythonpath DIR l2l_wsgi:application
"""

import os

import frappe.app

frappe.app._site = os.environ["L2L_ERPNEXT_SITE"]
frappe.app._sites_path = os.environ.get("SITES_PATH", ".")

application = frappe.app.application
