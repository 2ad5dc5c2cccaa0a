"""Bring an ERPNext 15 site to the state lead2ledger's tests and demo expect. Idempotent.

Run by deploy/erpnext.sh with the bench's Python from the bench's sites folder:

    cd BENCH/sites && ../env/bin/python setup_site.py --site l2l.localhost --time-zone UTC \
        --url http://127.0.0.1:8000 --credentials /var/lib/lead2ledger/erpnext/credentials.env

It completes the setup wizard (company Acme Test Ltd / ATL / USD / United States, standard chart of
accounts), makes sure the fiscal years, the master data of the demo mapping, the foreign-currency
receivable accounts, the modes of payment and the API user exist, writes the credentials file
(keys kept when they exist) and enables the scheduler. Every step checks before it writes, so a
second run changes nothing.

Values mirror the ERPNext simulator (tests/src/sim/erpnext/config.rs) and the captured site
(/work/shared/contracts/erpnext): prices 25 / 40 / 150 USD, tax account "Sales Tax - ATL" 8 %,
EUR 1.08 USD (as in the live findings), GBP 1.27 USD.
"""

import argparse
import datetime
import os
import sys

import frappe
from frappe.utils import flt, getdate, now_datetime

COMPANY = "Acme Test Ltd"
ABBR = "ATL"
COUNTRY = "United States"
CURRENCY = "USD"
PRICE_LIST = "Standard Selling"
WAREHOUSE = f"Stores - {ABBR}"
TAX_ACCOUNT = f"Sales Tax - {ABBR}"
TAX_TEMPLATE_TITLE = "US Sales Tax"
TAX_RATE = 8.0
BANK_ACCOUNT_NAME = "Primary Bank"
# Opening stock per stock item in Stores - ATL (the simulator seeds 500).
OPENING_QTY = 500.0

# item_code, item_name, item_group, stock_uom, is_stock_item, valuation_rate, Standard Selling rate
ITEMS = [
	("SKU-WIDGET", "Widget", "Products", "Nos", 1, 10.0, 25.0),
	("SKU-GADGET", "Gadget", "Products", "Nos", 1, 16.0, 40.0),
	("SKU-SERVICE", "Implementation Service (hour)", "Services", "Hour", 0, 0.0, 150.0),
]
# Currency Exchange: 1 <from> = rate <to>. Dated far back so that any transaction date finds it.
EXCHANGE_DATE = "2020-01-01"
EXCHANGE_RATES = [("EUR", "USD", 1.08), ("GBP", "USD", 1.27)]
CUSTOMER_GROUPS = ["Commercial", "Individual", "Government", "Non Profit"]
TERRITORIES = ["United States", "Rest Of The World"]
API_ROLES = [
	"System Manager",
	"Sales Manager",
	"Sales User",
	"Sales Master Manager",
	"Accounts Manager",
	"Accounts User",
	"Stock User",
	"Item Manager",
]

changes = []


def say(msg):
	print(f"[erpnext-setup] {msg}", flush=True)


def changed(msg):
	changes.append(msg)
	say(msg)


def insert(doc):
	d = frappe.get_doc(doc)
	d.flags.ignore_permissions = True
	d.insert()
	return d


# ---------------------------------------------------------------------------------------------
# Setup wizard, time zone, scheduler


def complete_wizard(tz):
	if frappe.is_setup_complete():
		return
	from frappe.desk.page.setup_wizard.setup_wizard import setup_complete

	year = getdate().year
	say(f"running the setup wizard (company {COMPANY}, {ABBR}, {CURRENCY}, {COUNTRY}, {tz})")
	result = setup_complete(
		{
			"language": "English",
			"country": COUNTRY,
			"timezone": tz,
			"currency": CURRENCY,
			"company_name": COMPANY,
			"company_abbr": ABBR,
			"chart_of_accounts": "Standard",
			"fy_start_date": f"{year}-01-01",
			"fy_end_date": f"{year}-12-31",
			"bank_account": BANK_ACCOUNT_NAME,
			"setup_demo": 0,
			"enable_telemetry": 0,
		}
	)
	frappe.db.commit()
	if not frappe.is_setup_complete():
		raise SystemExit(f"the setup wizard did not complete: {result!r}")
	changed("setup wizard completed")


def ensure_time_zone(tz):
	current = frappe.db.get_single_value("System Settings", "time_zone")
	if current != tz:
		ss = frappe.get_doc("System Settings")
		ss.time_zone = tz
		ss.flags.ignore_permissions = True
		ss.save()
		frappe.db.commit()
		changed(f"System Settings time zone {current} -> {tz}")
	# Scheduled jobs keep naive site-time timestamps. After a time-zone change their last run (or,
	# never run, their creation) can lie hours in the future and the scheduler waits for it: pull
	# such timestamps back to now.
	now = now_datetime()
	stale = frappe.db.sql(
		"""select name from `tabScheduled Job Type`
		where coalesce(last_execution, creation) > %s""",
		(now,),
	)
	if stale:
		frappe.db.sql(
			"""update `tabScheduled Job Type` set last_execution = %s
			where coalesce(last_execution, creation) > %s""",
			(now, now),
		)
		changed(f"reset last run of {len(stale)} scheduled job(s) to now ({now:%Y-%m-%d %H:%M:%S} {tz})")


def ensure_scheduler():
	from frappe.utils.scheduler import enable_scheduler, is_scheduler_disabled

	if is_scheduler_disabled(verbose=False):
		enable_scheduler()
		changed("scheduler enabled")


# ---------------------------------------------------------------------------------------------
# Accounting


def ensure_fiscal_years():
	this_year = getdate().year
	for year in (this_year, this_year + 1):
		start, end = datetime.date(year, 1, 1), datetime.date(year, 12, 31)
		if frappe.db.exists("Fiscal Year", {"year_start_date": start}):
			continue
		if frappe.db.exists("Fiscal Year", str(year)):
			raise SystemExit(f"Fiscal Year {year} exists but does not start on {start}")
		insert({"doctype": "Fiscal Year", "year": str(year), "year_start_date": start, "year_end_date": end})
		changed(f"Fiscal Year {year} created")


def account_name(name):
	return f"{name} - {ABBR}"


def ensure_account(name, parent, **fields):
	full = account_name(name)
	if frappe.db.exists("Account", full):
		doc = frappe.get_doc("Account", full)
		diff = {k: v for k, v in fields.items() if k != "account_currency" and doc.get(k) != v}
		if doc.get("account_currency") != fields.get("account_currency", doc.get("account_currency")):
			raise SystemExit(
				f"Account {full} has currency {doc.account_currency}, expected {fields['account_currency']}"
				" (an account's currency cannot change once it has entries; drop the site with"
				" `deploy/erpnext.sh reset`)"
			)
		if diff:
			doc.update(diff)
			doc.flags.ignore_permissions = True
			doc.save()
			changed(f"Account {full} updated: {diff}")
		return full
	if not frappe.db.exists("Account", parent):
		raise SystemExit(f"parent account {parent} is missing (chart of accounts not installed?)")
	insert(
		{
			"doctype": "Account",
			"account_name": name,
			"parent_account": parent,
			"company": COMPANY,
			"is_group": 0,
			**fields,
		}
	)
	changed(f"Account {full} created")
	return full


def ensure_accounts():
	ensure_account("Sales Tax", account_name("Duties and Taxes"), account_type="Tax", tax_rate=TAX_RATE)
	for cur in ("EUR", "GBP"):
		ensure_currency_enabled(cur)
		ensure_account(
			f"Debtors {cur}",
			account_name("Accounts Receivable"),
			account_type="Receivable",
			account_currency=cur,
		)
	bank_group = frappe.db.get_value(
		"Account", {"account_type": "Bank", "is_group": 1, "root_type": "Asset", "company": COMPANY}
	)
	if not bank_group:
		raise SystemExit("no Bank group account in the chart of accounts")
	bank = ensure_account(BANK_ACCOUNT_NAME, bank_group, account_type="Bank")
	if not frappe.db.get_value("Company", COMPANY, "default_bank_account"):
		frappe.db.set_value("Company", COMPANY, "default_bank_account", bank, update_modified=False)
		changed(f"Company default bank account = {bank}")


def ensure_currency_enabled(cur):
	if not frappe.db.get_value("Currency", cur, "enabled"):
		frappe.db.set_value("Currency", cur, "enabled", 1)
		changed(f"Currency {cur} enabled")


def ensure_exchange_rates():
	for from_cur, to_cur, rate in EXCHANGE_RATES:
		ensure_currency_enabled(from_cur)
		existing = frappe.get_all(
			"Currency Exchange",
			filters={"from_currency": from_cur, "to_currency": to_cur},
			fields=["name", "exchange_rate", "date", "for_selling", "for_buying"],
		)
		if any(
			flt(e.exchange_rate) == rate and str(e.date) == EXCHANGE_DATE and e.for_selling and e.for_buying
			for e in existing
		):
			continue
		for e in existing:
			frappe.delete_doc("Currency Exchange", e.name, ignore_permissions=True, force=True)
		insert(
			{
				"doctype": "Currency Exchange",
				"date": EXCHANGE_DATE,
				"from_currency": from_cur,
				"to_currency": to_cur,
				"exchange_rate": rate,
				"for_selling": 1,
				"for_buying": 1,
			}
		)
		changed(f"Currency Exchange 1 {from_cur} = {rate} {to_cur} (from {EXCHANGE_DATE})")
	# Rates dated 2020 must still be used: never treat them as stale.
	if not frappe.db.get_single_value("Accounts Settings", "allow_stale"):
		frappe.db.set_single_value("Accounts Settings", "allow_stale", 1)
		changed("Accounts Settings allow_stale = 1")


def ensure_tax_template():
	name = f"{TAX_TEMPLATE_TITLE} - {ABBR}"
	cost_center = frappe.get_cached_value("Company", COMPANY, "cost_center")
	row = {
		"charge_type": "On Net Total",
		"account_head": TAX_ACCOUNT,
		"description": f"{TAX_TEMPLATE_TITLE} {TAX_RATE:g}%",
		"rate": TAX_RATE,
		"cost_center": cost_center,
	}
	if frappe.db.exists("Sales Taxes and Charges Template", name):
		doc = frappe.get_doc("Sales Taxes and Charges Template", name)
		rows = doc.get("taxes")
		ok = (
			len(rows) == 1
			and rows[0].charge_type == row["charge_type"]
			and rows[0].account_head == TAX_ACCOUNT
			and flt(rows[0].rate) == TAX_RATE
		)
		if ok and doc.is_default:
			return
		if not ok:
			doc.set("taxes", [row])
		doc.is_default = 1
		doc.flags.ignore_permissions = True
		doc.save()
		changed(f"Sales Taxes and Charges Template {name} updated")
		return
	insert(
		{
			"doctype": "Sales Taxes and Charges Template",
			"title": TAX_TEMPLATE_TITLE,
			"company": COMPANY,
			"is_default": 1,
			"taxes": [row],
		}
	)
	changed(f"Sales Taxes and Charges Template {name} ({TAX_RATE:g} % On Net Total, {TAX_ACCOUNT})")


def ensure_modes_of_payment():
	cash_account = frappe.get_cached_value("Company", COMPANY, "default_cash_account") or account_name("Cash")
	bank_account = account_name(BANK_ACCOUNT_NAME)
	wanted = {
		"Cash": ("Cash", cash_account),
		"Wire Transfer": ("Bank", bank_account),
		"Bank Draft": ("Bank", bank_account),
		"Credit Card": ("Bank", bank_account),
		"Check": ("Bank", bank_account),
		# ERPNext names it "Check" on a US site; the simulator (and non-US sites) say "Cheque".
		"Cheque": ("Bank", bank_account),
	}
	for mop, (mop_type, account) in wanted.items():
		if not frappe.db.exists("Mode of Payment", mop):
			insert({"doctype": "Mode of Payment", "mode_of_payment": mop, "type": mop_type, "enabled": 1})
			changed(f"Mode of Payment {mop} created")
		doc = frappe.get_doc("Mode of Payment", mop)
		rows = [a for a in doc.get("accounts") if a.company == COMPANY]
		if rows and rows[0].default_account == account and doc.enabled:
			continue
		if rows:
			rows[0].default_account = account
		else:
			doc.append("accounts", {"company": COMPANY, "default_account": account})
		doc.enabled = 1
		doc.flags.ignore_permissions = True
		doc.save()
		changed(f"Mode of Payment {mop} -> {account}")


# ---------------------------------------------------------------------------------------------
# Selling master data


def ensure_tree_node(doctype, name_field, name, parent_field, parent):
	if frappe.db.exists(doctype, name):
		return
	insert({"doctype": doctype, name_field: name, parent_field: parent, "is_group": 0})
	changed(f"{doctype} {name} created")


def ensure_selling_masters():
	if not frappe.db.exists("Warehouse", WAREHOUSE):
		raise SystemExit(f"Warehouse {WAREHOUSE} is missing (the company setup creates it)")
	if not frappe.db.exists("Price List", PRICE_LIST):
		insert(
			{
				"doctype": "Price List",
				"price_list_name": PRICE_LIST,
				"currency": CURRENCY,
				"selling": 1,
				"buying": 0,
				"enabled": 1,
			}
		)
		changed(f"Price List {PRICE_LIST} created")
	if not frappe.db.exists("Customer Group", "All Customer Groups"):
		raise SystemExit("Customer Group 'All Customer Groups' is missing")
	for group in CUSTOMER_GROUPS:
		ensure_tree_node("Customer Group", "customer_group_name", group, "parent_customer_group", "All Customer Groups")
	if not frappe.db.exists("Territory", "All Territories"):
		raise SystemExit("Territory 'All Territories' is missing")
	for territory in TERRITORIES:
		ensure_tree_node("Territory", "territory_name", territory, "parent_territory", "All Territories")
	for group in ("Products", "Services"):
		ensure_tree_node("Item Group", "item_group_name", group, "parent_item_group", "All Item Groups")
	for uom in ("Nos", "Hour"):
		if not frappe.db.exists("UOM", uom):
			insert({"doctype": "UOM", "uom_name": uom})
			changed(f"UOM {uom} created")


def ensure_items():
	for code, name, group, uom, is_stock, valuation, price in ITEMS:
		if not frappe.db.exists("Item", code):
			insert(
				{
					"doctype": "Item",
					"item_code": code,
					"item_name": name,
					"item_group": group,
					"stock_uom": uom,
					"is_stock_item": is_stock,
					"include_item_in_manufacturing": 0,
					"is_sales_item": 1,
					"description": f"Sandbox item {name}",
					"valuation_rate": valuation,
					"item_defaults": [{"company": COMPANY, "default_warehouse": WAREHOUSE}],
				}
			)
			changed(f"Item {code} ({'stock' if is_stock else 'non-stock'}, {uom}) created")
		# An Item Price is valid from the day it is made unless told otherwise: an order dated
		# earlier (a deal's close date) would find no price and get price_list_rate 0. Valid
		# from the same day as the exchange rates, like a price list that has always been there.
		prices = frappe.get_all(
			"Item Price",
			filters={"item_code": code, "price_list": PRICE_LIST, "customer": ("is", "not set")},
			fields=["name", "price_list_rate", "valid_from"],
		)
		if not prices:
			insert(
				{
					"doctype": "Item Price",
					"item_code": code,
					"price_list": PRICE_LIST,
					"price_list_rate": price,
					"currency": CURRENCY,
					"valid_from": EXCHANGE_DATE,
				}
			)
			changed(f"Item Price {code} @ {PRICE_LIST} = {price:g} {CURRENCY}")
		else:
			if flt(prices[0].price_list_rate) != price:
				frappe.db.set_value("Item Price", prices[0].name, "price_list_rate", price)
				changed(f"Item Price {code} @ {PRICE_LIST} {prices[0].price_list_rate} -> {price:g} {CURRENCY}")
			if str(prices[0].valid_from) != EXCHANGE_DATE:
				frappe.db.set_value("Item Price", prices[0].name, "valid_from", EXCHANGE_DATE)
				changed(f"Item Price {code} @ {PRICE_LIST} valid from {EXCHANGE_DATE}")
	ensure_opening_stock()


def ensure_opening_stock():
	rows = []
	for code, _name, _group, _uom, is_stock, valuation, _price in ITEMS:
		if not is_stock:
			continue
		if frappe.db.exists("Stock Ledger Entry", {"item_code": code, "is_cancelled": 0}):
			continue
		rows.append({"item_code": code, "warehouse": WAREHOUSE, "qty": OPENING_QTY, "valuation_rate": valuation})
	if not rows:
		return
	doc = frappe.get_doc(
		{
			"doctype": "Stock Reconciliation",
			"company": COMPANY,
			"purpose": "Opening Stock",
			"expense_account": account_name("Temporary Opening"),
			"posting_date": getdate(),
			"items": rows,
		}
	)
	doc.flags.ignore_permissions = True
	doc.insert()
	doc.submit()
	changed(f"opening stock {OPENING_QTY:g} in {WAREHOUSE} for {', '.join(r['item_code'] for r in rows)} ({doc.name})")


# ---------------------------------------------------------------------------------------------
# API user and credentials


def read_env_file(path):
	values = {}
	try:
		with open(path) as f:
			for line in f:
				line = line.strip()
				if line and not line.startswith("#") and "=" in line:
					k, v = line.split("=", 1)
					values[k] = v
	except FileNotFoundError:
		pass
	return values


def ensure_api_user(email, credentials, url, tz):
	from frappe.utils.password import get_decrypted_password

	if not frappe.db.exists("User", email):
		user = frappe.get_doc(
			{
				"doctype": "User",
				"email": email,
				"first_name": "HubSpot",
				"last_name": "Integration",
				"user_type": "System User",
				"send_welcome_email": 0,
				"enabled": 1,
			}
		)
		user.flags.ignore_permissions = True
		user.flags.no_welcome_mail = True
		user.insert()
		changed(f"User {email} created")
	user = frappe.get_doc("User", email)
	if not user.enabled:
		user.enabled = 1
		user.save(ignore_permissions=True)
		changed(f"User {email} enabled")
	missing = [r for r in API_ROLES if r not in {d.role for d in user.get("roles")}]
	if missing:
		user.add_roles(*missing)
		changed(f"User {email} roles added: {', '.join(missing)}")

	user.reload()
	key = user.api_key
	secret = get_decrypted_password("User", email, "api_secret", raise_exception=False) if key else None
	if not (key and secret):
		key = key or frappe.generate_hash(length=15)
		secret = frappe.generate_hash(length=15)
		user.api_key = key
		user.api_secret = secret
		user.flags.ignore_permissions = True
		user.save()
		changed(f"API key generated for {email}")
	frappe.db.commit()

	wanted = {
		"L2L_TEST_ERPNEXT_URL": url,
		"L2L_TEST_ERPNEXT_API_KEY": key,
		"L2L_TEST_ERPNEXT_API_SECRET": secret,
		"L2L_TEST_ERPNEXT_TIME_ZONE": tz,
	}
	if read_env_file(credentials) != wanted:
		tmp = credentials + ".tmp"
		fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
		with os.fdopen(fd, "w") as f:
			f.write("".join(f"{k}={v}\n" for k, v in wanted.items()))
		os.chmod(tmp, 0o600)
		os.replace(tmp, credentials)
		changed(f"credentials written to {credentials}")
	else:
		os.chmod(credentials, 0o600)


def ensure_host_name(url):
	# Links Frappe builds (emails, webhooks' doc URLs) use host_name.
	if frappe.conf.get("host_name") != url:
		from frappe.installer import update_site_config

		update_site_config("host_name", url)
		changed(f"site_config host_name = {url}")


# ---------------------------------------------------------------------------------------------


def main():
	p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	p.add_argument("--site", required=True)
	p.add_argument("--time-zone", required=True)
	p.add_argument("--url", required=True, help="URL written to the credentials file")
	p.add_argument("--credentials", required=True, help="path of the credentials env file")
	p.add_argument("--api-user", default="hubspot.integration@acme.test")
	args = p.parse_args()

	try:
		import zoneinfo

		zoneinfo.ZoneInfo(args.time_zone)
	except Exception:
		raise SystemExit(f"unknown IANA time zone {args.time_zone!r}")

	frappe.init(site=args.site, sites_path=".")
	frappe.connect()
	frappe.set_user("Administrator")
	try:
		complete_wizard(args.time_zone)
		ensure_time_zone(args.time_zone)
		ensure_scheduler()
		ensure_fiscal_years()
		ensure_accounts()
		ensure_exchange_rates()
		ensure_tax_template()
		ensure_modes_of_payment()
		ensure_selling_masters()
		ensure_items()
		frappe.db.commit()
		ensure_api_user(args.api_user, args.credentials, args.url, args.time_zone)
		ensure_host_name(args.url)
		frappe.db.commit()
		if changes:
			frappe.clear_cache()
	except BaseException:
		frappe.db.rollback()
		raise
	finally:
		frappe.destroy()
	say(f"site {args.site} is set up ({len(changes)} change(s))")


if __name__ == "__main__":
	sys.exit(main())
