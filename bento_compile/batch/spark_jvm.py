"""A faster start for the Spark driver JVM on a local master: a class-data archive, made once per install.

On a local master the driver JVM is the whole cluster, and starting it (7-10 s on 2 cores) was most of a
small run: the JVM loading, verifying and interpreting Spark's classes. A dynamic class-data-sharing
archive (AppCDS, HotSpot 13+) holds those classes already parsed and verified; with it the session starts
in 3-4 s (bench/RESULTS.md). When the JVM only schedules (the units engine: pyarrow reads, scores and
writes in the Python workers), it also runs with the C1 compiler alone, which reaches speed sooner.

The archive is made the first time, by a child process that starts one session with
`-XX:ArchiveClassesAtExit` and stops it; it enters the cache only once that JVM has exited cleanly, under
a key of the Java binary, pyspark and its jars. A JVM that cannot make one (not HotSpot, too old) is
remembered and runs go on without. An archive the JVM cannot use (another classpath) it ignores itself.
`BENTO_COMPILE_SPARK_CDS=0` turns all of this off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bento_compile.core.files import cache_root

CDS_ENV = "BENTO_COMPILE_SPARK_CDS"
_MAKE_TIMEOUT_S = 240.0
_QUIET = "-Xlog:cds*=off"  # the JVM's notes on classes it leaves out would land on the CLI's stdout
# Options a user may already give the driver JVM; theirs are never replaced.
_THEIR_OPTIONS = ("spark.driver.extraJavaOptions", "spark.driver.defaultJavaOptions")


def driver_java_options(scheduling_only: bool) -> str | None:
    """The driver's extra JVM options for a session this process starts on a local master, or None
    (turned off, no archive can be made here, or the user configures the driver JVM themselves)."""
    if os.environ.get(CDS_ENV, "1") == "0" or _user_configures_the_jvm():
        return None
    java = _java()
    if java is None:
        return None
    folder = cache_root() / "spark-cds"
    key = _key(java)
    archive, failed = folder / f"{key}.jsa", folder / f"{key}.failed"
    if any(c.isspace() or c in "\"'\\" for c in str(archive)):  # Spark splits the option string on spaces
        return None
    if not archive.is_file() and (failed.exists() or not _make(archive, failed)):
        return None
    options = [f"-XX:SharedArchiveFile={archive}", _QUIET]
    if scheduling_only:
        options.append("-XX:TieredStopAtLevel=1")
    return " ".join(options)


def _user_configures_the_jvm() -> bool:
    if os.environ.get("PYSPARK_SUBMIT_ARGS"):
        return True
    for folder in (os.environ.get("SPARK_CONF_DIR"), os.path.join(os.environ.get("SPARK_HOME", ""), "conf")):
        defaults = Path(folder or "") / "spark-defaults.conf"
        if folder and defaults.is_file():
            try:
                text = defaults.read_text(errors="replace")
            except OSError:
                return True
            if any(name in text for name in _THEIR_OPTIONS):
                return True
    return False


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else None
    if found is None or not found.is_file():
        which = shutil.which("java")
        found = Path(which) if which else None
    return found.resolve() if found is not None else None


def _key(java: Path) -> str:
    """Changes whenever the JVM or the classpath it would load could: the Java binary, pyspark, its jars."""
    import pyspark

    digest = hashlib.sha256()
    stat = java.stat()
    digest.update(f"{java}|{stat.st_size}|{stat.st_mtime_ns}|{pyspark.__version__}|"
                  f"{os.environ.get('SPARK_HOME', '')}".encode())
    jars = Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    if jars.is_dir():
        for jar in sorted(jars.iterdir()):
            digest.update(f"|{jar.name}:{jar.stat().st_size}".encode())
    return digest.hexdigest()[:20]


def _make(archive: Path, failed: Path) -> bool:
    """Make the archive in a child process; True when it is in place. A failure is remembered in `failed`."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.partial")
    print("Spark: recording the JVM's classes once for faster starts (about 20 s; later runs start "
          f"about 5 s sooner; {CDS_ENV}=0 turns this off) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "bento_compile.batch.spark_jvm", str(partial)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=_MAKE_TIMEOUT_S, env={**os.environ, CDS_ENV: "0"})
        made = result.returncode == 0 and partial.is_file() and partial.stat().st_size > 0
        reason = "" if made else (result.stderr.decode(errors="replace").strip().splitlines() or ["no archive"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        made, reason = False, f"{type(exc).__name__}: {exc}"
    if made:
        os.replace(partial, archive)
    else:
        partial.unlink(missing_ok=True)
        failed.write_text(f"{reason}\n")
        print(f"Spark: no class archive ({reason[:200]}); runs go on without it. Delete {failed} to try again.",
              file=sys.stderr, flush=True)
    print(f"Spark: class archive {'ready' if made else 'skipped'} in {time.monotonic() - started:.1f} s.",
          file=sys.stderr, flush=True)
    return made


def _record(path: str) -> None:
    """The child: one session and one job with a Python worker, then a clean JVM exit, which writes `path`."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (SparkSession.builder.master("local[1]").appName("bento-compile class archive")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.extraJavaOptions", f"-XX:ArchiveClassesAtExit={path} {_QUIET}")
             .getOrCreate())
    spark.sparkContext.setLogLevel("OFF")
    spark.sparkContext.parallelize(range(2), 2).map(lambda x: x + 1).collect()
    jvm = getattr(spark.sparkContext._gateway, "proc", None)  # pyspark keeps the JVM's Popen for callers
    spark.stop()
    if jvm is None or jvm.stdin is None:
        raise SystemExit("pyspark did not start the JVM itself")
    jvm.stdin.close()  # the gateway JVM exits on EOF; the archive is written as it exits
    jvm.wait(timeout=_MAKE_TIMEOUT_S)


if __name__ == "__main__":
    _record(sys.argv[1])
