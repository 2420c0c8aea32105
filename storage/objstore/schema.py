"""The PostgreSQL schema of the object-store backend, and its migration.

Everything shared by the nodes lives here: users, tokens, the login throttle,
quotas and reservations, the folder tree, unfinished uploads with their
parts, the hash cache and the collector's queue of blobs to delete.

The tree is an adjacency list (``entries.parent``), so renaming or moving a
folder is one ``UPDATE`` of one row whatever it holds, and a listing is an
index range scan on ``(parent, name)``.  Each user has one root entry (parent
NULL, name ''); ids are global, so ``(parent, name)`` alone is unique.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION = 2

#: Advisory-lock key space.  The two-int form ``pg_advisory_lock(ns, id)`` keeps
#: our locks apart from anybody else's in a shared database.
LOCK_NS_MIGRATE = 0x66747064          # 'ftpd'
LOCK_NS_UPLOAD = 0x66747075           # 'ftpu': one writer per upload, id = uploads.id

_SCHEMA_V1 = """
CREATE TABLE users (
    name     text PRIMARY KEY,
    pwhash   text NOT NULL,
    quota    bigint NOT NULL CHECK (quota >= 0),
    used     bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    created  double precision NOT NULL,
    disabled boolean NOT NULL DEFAULT false
);
CREATE TABLE tokens (
    digest   text PRIMARY KEY,             -- sha256(token) hex; the token is never stored
    username text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    expires  double precision NOT NULL
);
CREATE INDEX tokens_user ON tokens(username);
CREATE TABLE throttle (                    -- failed logins, shared by every node
    kind         smallint NOT NULL,        -- 0 user name, 1 client address
    key          text NOT NULL,
    failures     integer NOT NULL,
    locked_until double precision NOT NULL DEFAULT 0,
    last         double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE entries (
    id       bigserial PRIMARY KEY,
    owner    text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    parent   bigint REFERENCES entries(id),  -- NULL only for a user's root
    name     text COLLATE "C" NOT NULL,      -- byte order: listings page by name
    type     text NOT NULL CHECK (type IN ('file', 'dir')),
    size     bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    mtime    double precision NOT NULL,
    mode     integer NOT NULL,
    blob     text,                         -- files only: the immutable object's id
    sha256   text,
    CHECK ((type = 'file') = (blob IS NOT NULL)),
    CHECK ((parent IS NULL) = (name = ''))
);
CREATE UNIQUE INDEX entries_child ON entries(parent, name) WHERE parent IS NOT NULL;
CREATE UNIQUE INDEX entries_root ON entries(owner) WHERE parent IS NULL;
CREATE TABLE uploads (
    id        bigserial PRIMARY KEY,
    owner     text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    path      text NOT NULL,               -- normalised user path of the target
    size      bigint NOT NULL CHECK (size >= 0),
    sha256    text,
    reserved  bigint NOT NULL CHECK (reserved >= 0),
    blob      text NOT NULL,
    mpu       text NOT NULL,               -- the S3 multipart upload id
    part_size bigint NOT NULL,
    created   double precision NOT NULL,
    updated   double precision NOT NULL,
    UNIQUE (owner, path)
);
CREATE TABLE upload_parts (
    upload bigint NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    number integer NOT NULL CHECK (number BETWEEN 1 AND 10000),
    size   bigint NOT NULL CHECK (size > 0),
    etag   text NOT NULL,
    PRIMARY KEY (upload, number)
);
CREATE TABLE hashes (                      -- blobs are immutable: the id is the cache key
    blob   text PRIMARY KEY,
    size   bigint NOT NULL,
    sha256 text NOT NULL
);
CREATE TABLE garbage (                     -- the collector's queue; safe to replay
    blob   text NOT NULL,
    mpu    text NOT NULL DEFAULT '',       -- '' for a completed blob, else an upload to abort
    since  double precision NOT NULL,
    PRIMARY KEY (blob, mpu)
);
"""


#: Version 2: the throttle keeps the local ledger's records (``since``, for decay) and
#: the addresses trusted per account (storage/objstore/logins.py).
_SCHEMA_V2 = """
ALTER TABLE throttle ADD COLUMN since double precision NOT NULL DEFAULT 0;
CREATE TABLE login_trust (
    username text NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    addr     text NOT NULL,
    last     double precision NOT NULL,
    PRIMARY KEY (username, addr)
);
"""


def migrate(conn: Any) -> None:
    """Create or upgrade the schema; safe when several nodes start at once.

    ``conn`` is a psycopg connection in autocommit mode; the migration runs in
    one transaction under a transaction-scoped advisory lock.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s::int, 0)", (LOCK_NS_MIGRATE,))
        conn.execute("CREATE TABLE IF NOT EXISTS ftpd_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM ftpd_schema").fetchone()
        version = 0 if row is None else int(row["version"])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {version} is newer than this ftpd "
                               f"({SCHEMA_VERSION})")
        if version < 1:
            conn.execute(_SCHEMA_V1)
        if version < 2:
            conn.execute(_SCHEMA_V2)
        if row is None:
            conn.execute("INSERT INTO ftpd_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        else:
            conn.execute("UPDATE ftpd_schema SET version = %s", (SCHEMA_VERSION,))
