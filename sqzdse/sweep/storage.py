"""Where a sweep's studies live: opening an Optuna storage (SQLite or PostgreSQL), safely for many workers.

``open_storage`` (heartbeats, one clear line for a bad URL, passwords masked by ``redact``), SQLite serialised by
BEGIN IMMEDIATE, the study lock, and the trial claim. Every use of a private Optuna API is here, each in one small
function whose comment says why no public API does it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import warnings

from sqzdse.errors import SqzdseError
from sqzdse.sweep.spec import SpecError, SweepSpec

DEFAULT_RUNS = "runs"
# --------------------------------------------------------------------------- storage

STORAGE_ENV = "SQZDSE_STORAGE"


DEFAULT_STORAGE = f"sqlite:///{DEFAULT_RUNS}/sqzdse.db"  # every study of a project: one optuna-dashboard shows all


def default_storage(spec_or_name=None) -> str:
    """The embedded default, an SQLite file that holds every study (no server): ``sqlite:///runs/sqzdse.db``.

    A study that an earlier sqzdse made in its own default file, ``runs/NAME.db``, stays there: that file is the
    study's storage (``sqzdse sweep run`` says so), so continuing it never starts a second copy of the study.
    """
    name = spec_or_name.name if isinstance(spec_or_name, SweepSpec) else spec_or_name
    legacy = legacy_storage_path(name) if name else None
    return f"sqlite:///{legacy}" if legacy and os.path.isfile(legacy) else DEFAULT_STORAGE


def legacy_storage_path(name: str) -> str:
    """Where sqzdse before 0.2 kept study `name`: a file of its own."""
    return os.path.join(DEFAULT_RUNS, f"{name}.db")


def storage_url(given: str | None, spec_or_name=None) -> str:
    """The storage to use: --storage, else $SQZDSE_STORAGE (a password stays off the command line and out of
    `ps`), else the default SQLite file (``default_storage``)."""
    if given or os.environ.get(STORAGE_ENV):
        return given or os.environ[STORAGE_ENV]
    return default_storage(spec_or_name)


def redact(url: str) -> str:
    """The URL with its password as *** (what messages, logs and reports show)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: mask whatever sits between "user:" and "@"
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """`text` (a library's error) with the URL and its password masked."""
    from sqlalchemy.engine import make_url

    text = text.replace(url, redact(url))
    try:
        password = make_url(url).password
    except Exception:
        password = None
    return text.replace(f":{password}@", ":***@") if password else text  # a bare "p" must not mask every p


def open_storage(url: str, spec: SweepSpec | None = None, *, create: bool = False):
    """An Optuna storage with heartbeats (stale trials are failed and retried); one clear line for a bad URL.

    ``create``: make a missing SQLite file, its folder and the tables (only ``sweep run`` does). Readers (export,
    status, plot, report) never create: a missing SQLite file is an error naming its path.
    """
    import optuna
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(f"{shown!r} is not a storage URL (e.g. sqlite:///runs/sqzdse.db, "
                           "postgresql+psycopg2://USER@HOST/DB)") from None  # fmt: skip
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database in (None, "", ":memory:"):
        raise StorageError(f"{shown!r} is an in-memory database, gone when the process ends (and unseen by other "
                           "workers and readers): give a file, e.g. sqlite:///runs/sqzdse.db")  # fmt: skip
    if sqlite:
        _sqlite_file(parsed.database, shown, create)
    hb = spec.heartbeat_interval if spec else 10
    grace = spec.grace_period if spec else 120
    retry = spec.max_retry if spec else 3
    kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_stale = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry)
    for attempt in range(5):
        try:
            storage = _rdb_storage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=hb,
                grace_period=grace,
                heartbeat_stale_trial_callback=retry_stale,
                skip_table_creation=not create,
            )
            break
        except Exception as e:  # sqlalchemy raises many kinds: bad driver, refused connection, bad path
            while e.__cause__ is not None:  # Optuna's StorageInternalError hides the cause behind a generic text
                e = e.__cause__
            error = e
            # Workers that start together race to create the tables; the losers retry.
            if "UNIQUE constraint" not in str(e) and "already exists" not in str(e) and "locked" not in str(e):
                first = _scrub(str(error).splitlines()[0] if str(error) else "", url)
                empty = "no such table" in first or "does not exist" in first
                hint = " (not an Optuna storage: no sweep ran on it)" if empty else ""
                raise StorageError(f"cannot open the storage {shown!r}: {type(e).__name__}: {first}{hint}") from None
            time.sleep(0.5 * (attempt + 1))
    else:
        raise StorageError(f"cannot open the storage {shown!r}: {type(error).__name__}: {_scrub(str(error), url)}")
    if sqlite and create:
        _serialize_sqlite(storage)
    return storage


def _sqlite_file(path: str, shown: str, create: bool) -> None:
    """Check (reading) or make (creating) the folder of an SQLite storage; one line naming the path if impossible."""
    if os.path.isdir(path):
        raise StorageError(f"{path}: a folder, not an SQLite file (storage {shown!r})")
    if not create:
        if not os.path.isfile(path):
            raise MissingStorage(f"{path}: no such SQLite file (storage {shown!r}); sqzdse sweep run creates it")
        return
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        above = folder
        while not os.path.exists(above):
            above = os.path.dirname(above)
        why = f"{above} is a file, not a folder" if not os.path.isdir(above) else e.strerror
        raise StorageError(f"cannot create the SQLite storage {path} (storage {shown!r}): {why}") from None


def _serialize_sqlite(storage) -> None:
    """Every transaction on this SQLite storage starts with BEGIN IMMEDIATE: it takes the database's write lock first.

    Optuna's storage reads a trial, then updates it: a claim (WAITING -> RUNNING, in ``set_trial_state_values``),
    failing a stale trial, finishing one. On PostgreSQL the read is SELECT ... FOR UPDATE, a row lock, so exactly one
    worker wins. SQLite has no row locks, and Python's sqlite3 opens a transaction only at the first write, so two
    workers both read WAITING and both claim (optuna/optuna#4002; here 68 double claims of 200 trials by 8
    processes). Under BEGIN IMMEDIATE the read and the update are one serialised transaction: one claim succeeds and
    ``set_trial_state_values`` returns False to the others. Optuna's maintainers recommend JournalStorage instead of
    SQLite for many processes on one machine; it has no heartbeats, which detect killed workers here, so SQLite stays
    the embedded default and is made safe: this is SQLAlchemy's documented pysqlite recipe ("Serializable isolation").
    It needs the engine RDBStorage built (``storage.engine``, not a parameter Optuna offers) and runs only on the
    writer's storage (``sweep run``); readers keep plain transactions.
    """
    from sqlalchemy import event

    event.listen(storage.engine, "connect", lambda dbapi_conn, _: setattr(dbapi_conn, "isolation_level", None))
    event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    storage.engine.dispose()  # the connections RDBStorage opened predate the listeners


def _rdb_storage(url, **kwargs):
    import optuna

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5.1; they are what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


class StorageError(SqzdseError, RuntimeError):
    """The storage URL is malformed or unreachable."""


class MissingStorage(StorageError):
    """A reader asked for an SQLite storage that no ``sweep run`` has created yet."""


@contextlib.contextmanager
def study_lock(storage, url: str, name: str):
    """One `sweep run` at a time creates, checks and fills the study `name` (on any number of machines).

    SQLite: an exclusive flock on ``FILE.db.lock`` beside the database (SQLite storages serve one machine).
    PostgreSQL: a session advisory lock on a connection of its own. Both are released when their holder exits or
    is killed, so a creator killed mid-enqueue blocks nobody: the next run enqueues what is missing.
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":  # a file: open_storage refuses in-memory databases
        import fcntl

        with open(parsed.database + ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
        return
    if backend != "postgresql":
        raise StorageError(f"sweep run needs an sqlite or postgresql storage, not {backend!r} ({redact(url)}): "
                           "its workers lock the study while they enqueue its grid")  # fmt: skip
    import sqlalchemy

    key = int.from_bytes(hashlib.sha1(f"sqzdse study {name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def study_names(storage, url: str, must_hold: str | None = None) -> list[str]:
    """The storage's study names; SpecError naming them if `must_hold` is not among them."""
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if must_hold is not None and must_hold not in names:
        raise SpecError(f"study {must_hold!r} not in {redact(url)}; it holds: {', '.join(names) or 'none'}")
    return names


def delete_study(storage_url: str, name: str, confirm=lambda n_trials: True) -> int | None:
    """Remove a study and its trials, if ``confirm(its number of trials)``; returns that number, None if refused.

    Refused (StorageError naming them) while trials are RUNNING with a live worker: deleting would throw away the
    work in progress and stop those workers. A killed worker's trial, its heartbeat stale, does not count.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    storage = open_storage(storage_url)
    study_names(storage, storage_url, must_hold=name)
    study = optuna.load_study(study_name=name, storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if running:
        raise StorageError(f"study {name!r} has {len(running)} trial(s) RUNNING (number "
                           f"{', '.join(map(str, running[:10]))}{', ...' if running[10:] else ''}): stop their workers "
                           "first (SIGINT or SIGTERM queues their trials again), then delete")  # fmt: skip
    n = len(study.get_trials(deepcopy=False))
    if not confirm(n):
        return None
    optuna.delete_study(study_name=name, storage=storage)
    return n


def claim_waiting(study):
    """Take a WAITING (enqueued or retried) trial, or None. Exactly one worker gets each: PostgreSQL locks the row
    (SELECT ... FOR UPDATE), SQLite the whole database (``_serialize_sqlite``); the losers try the next one."""
    import optuna

    # Study._pop_waiting_trial_id is the claim Study.ask makes; no public API claims only: ask() samples a new trial
    # when none is waiting, and a grid worker must stop then.
    trial_id = study._pop_waiting_trial_id()
    return None if trial_id is None else optuna.Trial(study, trial_id)


@contextlib.contextmanager
def heartbeat(trial):
    """A context that writes the trial's heartbeat every ``heartbeat_interval`` seconds while a worker runs it.

    Study.optimize starts Optuna's own heartbeat thread; ask/tell (and claim_waiting) has no public way to start
    one, and without heartbeats a killed worker's trial stays RUNNING for ever. Optuna's thread also dies at the
    first failed write (a database locked past its timeout), after which a live trial goes stale and is trained a
    second time; this one keeps beating, so a storage that recovers within the grace period loses nothing.
    Trial._trial_id is the storage's key for the trial, which only private attributes hold.
    """
    import threading

    storage, trial_id = trial.storage, trial._trial_id
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # locked or unreachable: the next beat tries again, as the grace period allows
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"sqzdse-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def report(trial, value: float, step: int) -> None:
    """Record ``value`` as the trial's intermediate value at ``step``: what pruners and optuna-dashboard read."""
    if len(trial.study.directions) == 1:
        trial.report(value, step)
        return
    # Trial.report refuses multi-objective studies (their pruners would need one objective), yet the storage keeps
    # intermediate values for any trial and optuna-dashboard draws them; the storage's setter is public, the
    # trial's key in it (Trial._trial_id) is not.
    trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)
