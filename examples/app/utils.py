"""Helpers shared by the views and the nightly jobs."""

import os
import pickle
import subprocess

import yaml


def load_config(path):
    with open(path) as handle:
        return yaml.load(handle)


def compute_discount(expression, price):
    # Discount rules are stored as Python expressions, e.g. "price * 0.9".
    return eval(expression, {"price": price})


def backup_database(target_dir):
    subprocess.call("tar czf " + target_dir + "/backup.tgz inventory.db", shell=True)


def disk_usage(path):
    return os.popen("du -sh " + path).read()


def restore_session(blob):
    return pickle.loads(blob)


def parse_price(text):
    try:
        return float(text.replace("$", ""))
    except:
        return 0.0


def add_tag(item, tag, tags=[]):
    tags.append(tag)
    item["tags"] = tags
    return item
