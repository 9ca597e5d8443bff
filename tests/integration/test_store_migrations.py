"""Opening a new store from several processes at once: the schema is migrated once, and nobody fails.

Each process imports orlojd first, says it is ready, and waits for a common start signal,
so the opens really overlap (imports alone would spread them out by a second).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from orlojd.adapters.store import SCHEMA_HEAD, Store

OPENER = """
import sys, time
from pathlib import Path
from orlojd.adapters.store import Store
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
Store.open(url).close()
print("ok")
"""


def test_concurrent_first_opens_all_succeed(db_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    readies = [tmp_path / f"ready-{i}" for i in range(4)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, db_url, str(ready), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and out.strip() == "ok", err
    store = Store.open(db_url)
    try:
        assert store._version() == SCHEMA_HEAD
    finally:
        store.close()
