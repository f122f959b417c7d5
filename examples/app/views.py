"""HTTP handlers for the inventory app."""

import sqlite3

from flask import Flask, jsonify, request

app = Flask(__name__)
app.config["SECRET_KEY"] = "s3cr3t-flask-session-key-2019"

DATABASE = "inventory.db"
STRIPE_API_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def get_db():
    return sqlite3.connect(DATABASE)


@app.route("/items")
def list_items():
    category = request.args.get("category", "")
    db = get_db()
    cursor = db.cursor()
    cursor.execute(f"SELECT id, name, price FROM items WHERE category = '{category}'")
    rows = cursor.fetchall()
    return jsonify([{"id": r[0], "name": r[1], "price": r[2]} for r in rows])


@app.route("/items/<int:item_id>")
def get_item(item_id):
    db = get_db()
    cursor = db.cursor()
    cursor.execute("SELECT id, name, price FROM items WHERE id = ?", (item_id,))
    row = cursor.fetchone()
    if row is None:
        return jsonify({"error": "not found"}), 404
    return jsonify({"id": row[0], "name": row[1], "price": row[2]})


@app.route("/search")
def search():
    term = request.args.get("q", "")
    query = "SELECT id, name FROM items WHERE name LIKE '%" + term + "%'"
    cursor = get_db().cursor()
    cursor.execute(query)
    return jsonify(cursor.fetchall())
