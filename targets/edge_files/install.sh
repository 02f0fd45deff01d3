#!/bin/sh
# install.sh: install this bento-compile edge bundle on this device, offline.
#
#   sh install.sh [--prefix /opt/NAME] [--python python3] [--no-service] [--no-start]
#   sh install.sh --root /mnt/rootfs [--prefix /opt/NAME]     # into a mounted root file system
#   PREFIX/current/install.sh --finish                          # what the systemd unit runs first
#
# 1. Verifies the sha256 of EVERY file against SHA256SUMS before anything else, and
#    refuses files that are not listed.
# 2. Copies the bundle into PREFIX/releases/ID, creates a venv there and installs the
#    bundled wheels with `pip --no-index` (never the network), then loads the model
#    and runs its recorded example (`run check`).
# 3. Only then switches PREFIX/current to the new release (an atomic rename of a
#    symlink), keeps the one before as PREFIX/previous (`run rollback` goes back),
#    and removes older releases.
# 4. Installs the systemd unit and (re)starts it when systemd runs here.
# A failure at any step removes the half-made release; `current` is never touched.
# With --root, steps 2's venv and check are deferred to the device's first start
# (the unit's ExecStartPre runs `install.sh --finish`): this machine cannot run them.
#
# Exit codes: 0 ok, 1 failed, 2 usage, 3 target not writable, 4 files do not verify,
# 5 wrong device (architecture, Python, missing system package).
set -eu
umask 022
export LC_ALL=C

ROOT=/
PREFIX=
PYTHON=${BENTO_EDGE_PYTHON:-python3}
SERVICE=1
START=1
FINISH=0
QUIET=0
CLEANUP=

say() { [ "$QUIET" = 1 ] || echo "install.sh: $*" >&2; }
die() {
    echo "install.sh: error: $1" >&2
    [ -z "${2:-}" ] || echo "install.sh: fix: $2" >&2
    exit "${3:-1}"
}
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || usage 2; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --root) [ $# -ge 2 ] || usage 2; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --python) [ $# -ge 2 ] || usage 2; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --no-service) SERVICE=0; shift ;;
        --no-start) START=0; shift ;;
        --finish) FINISH=1; shift ;;
        --quiet|-q) QUIET=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd -P)
cd "$HERE"
# The unit runs --finish at every start: once a release is complete, that is a no-op.
if [ "$FINISH" = 1 ] && [ -f .installed ] && [ -x venv/bin/python ]; then
    exit 0
fi
[ -f SHA256SUMS ] && [ -f bundle.env ] || die "$HERE is not a bento-compile edge bundle (no SHA256SUMS / bundle.env)" \
    "run the install.sh that came inside the bundle, from the unpacked bundle folder"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed" "install coreutils (or busybox with sha256sum)" 5

# ---- 1. verify (always first) -------------------------------------------------------------
verify_listed() {
    if ! report=$(sha256sum -c --quiet SHA256SUMS 2>&1); then
        die "files of this bundle do not match its SHA256SUMS (corrupted or changed):
$(echo "$report" | head -n 5)" "download or copy the bundle again and compare its .sha256 with the one the build printed" 4
    fi
}
verify_listed
if [ "$FINISH" = 0 ]; then
    # Only listed regular files, and folders that hold one: no links, FIFOs, device nodes, sockets or
    # empty folders, which a sha256 list cannot vouch for and which `cp`/`tar` would install as they are.
    odd=$(find . ! -type f ! -type d | head -n 5 | tr '\n' ' ')
    [ -z "$odd" ] || die "the bundle holds what is not a regular file or a folder: $odd" "rebuild the bundle" 4
    scratch=$(mktemp -d)
    cut -c67- SHA256SUMS | sort > "$scratch/listed"
    find . -type f ! -path ./SHA256SUMS ! -path ./SHA256SUMS.sig | sed 's|^\./||' | sort > "$scratch/found"
    unlisted=$(comm -23 "$scratch/found" "$scratch/listed")
    awk -F/ '{ p = $1; for (i = 2; i <= NF; i++) { print p; p = p "/" $i } }' "$scratch/listed" | sort -u \
        > "$scratch/folders"
    find . -mindepth 1 -type d | sed 's|^\./||' | sort > "$scratch/found-folders"
    empty=$(comm -23 "$scratch/found-folders" "$scratch/folders")
    rm -rf "$scratch"
    [ -z "$unlisted" ] || die "files that SHA256SUMS does not list: $(echo "$unlisted" | head -n 5 | tr '\n' ' ')" \
        "unpack the bundle into an empty folder" 4
    [ -z "$empty" ] || die "folders that hold no listed file: $(echo "$empty" | head -n 5 | tr '\n' ' ')" \
        "unpack the bundle into an empty folder" 4
fi
# shellcheck disable=SC1091
. ./bundle.env
say "verified $(wc -l < SHA256SUMS) files of $TAG ($MACHINE, Python $PY_VERSION)"

check_device() {
    machine=$(uname -m)
    case "$MACHINE:$machine" in
        "$MACHINE:$MACHINE"|armv7l:armv8l|armv7l:armv6l) ;;
        *) die "this bundle is for $MACHINE but this device is $machine" \
               "build one for it: bento-compile target edge $TAG --arch <arm64|armv7|x86_64>" 5 ;;
    esac
    command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' on this device" \
        "install Python $PY_VERSION (apt-get install python3 python3-venv) or pass --python PATH" 5
    have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$have" = "$PY_VERSION" ] || die "this bundle's wheels are for Python $PY_VERSION but $PYTHON is $have" \
        "pass --python /usr/bin/python$PY_VERSION, or rebuild with --python $have" 5
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON cannot create venvs (no venv/ensurepip module)" \
        "apt-get install python3-venv" 5
    # manylinux wheels (numpy, onnxruntime) link the C++ runtime, which minimal images may lack.
    ldc=$(command -v ldconfig || echo /sbin/ldconfig)
    libs=$("$ldc" -p 2>/dev/null || true)
    if [ -n "$libs" ] && ! echo "$libs" | grep -q 'libstdc++\.so\.6'; then
        die "this device has no libstdc++.so.6, which the bundled runtime wheels need" "apt-get install libstdc++6" 5
    fi
    for module in $SYSTEM_MODULES; do
        "$PYTHON" -c "import $module" 2>/dev/null || die "this bundle uses the device's own '$module' (no $MACHINE wheel of it on PyPI), and $PYTHON cannot import it" \
            "apt-get install python3-$module" 5
    done
}

# Make the venv of a release in place, install the wheels offline, and prove the model loads.
finish_release() {
    rel=$1
    if [ -f "$rel/.installed" ] && [ -x "$rel/venv/bin/python" ]; then
        return 0
    fi
    check_device
    rm -rf "$rel/venv"
    CLEANUP_VENV="$rel/venv"
    site_flag=
    [ -z "$SYSTEM_MODULES" ] || site_flag=--system-site-packages
    say "creating the venv ($PYTHON${site_flag:+ $site_flag})"
    "$PYTHON" -m venv $site_flag "$rel/venv"
    say "installing $(ls "$rel/wheels" | wc -l) bundled wheels offline (pip --no-index)"
    PIP_CONFIG_FILE=/dev/null "$rel/venv/bin/python" -m pip install --no-index --find-links "$rel/wheels" \
        --no-cache-dir --disable-pip-version-check --quiet -r "$rel/requirements.txt" \
        || die "pip could not install the bundled wheels" "see pip's message above" 1
    site=$("$rel/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$rel/app" > "$site/bento-compile-app.pth"
    "$rel/venv/bin/python" -m compileall -q "$rel/app" >/dev/null 2>&1 || true
    say "loading the model and running its recorded example"
    out=$("$rel/run" check 2>&1) || die "the model did not load on this device: $out" \
        "keep the current release (nothing was switched); report this with the output above" 1
    say "check passed: $out"
    touch "$rel/.installed"
    rm -f "$rel/.pending"
    CLEANUP_VENV=
}

CLEANUP_VENV=
LOCK=
on_exit() {
    code=$?
    [ -z "$LOCK" ] || rmdir "$LOCK" 2>/dev/null || true
    if [ "$code" != 0 ]; then
        [ -z "$CLEANUP_VENV" ] || rm -rf "$CLEANUP_VENV"
        # shellcheck disable=SC2086  # two paths, validated to hold no spaces
        [ -z "$CLEANUP" ] || rm -rf $CLEANUP
        [ -z "$CLEANUP" ] || say "removed the half-made release; nothing else changed"
    fi
    exit "$code"
}
trap on_exit EXIT
trap 'exit 1' INT TERM HUP

if [ "$FINISH" = 1 ]; then
    finish_release "$HERE"
    exit 0
fi

# ---- 2. copy into a new release folder ------------------------------------------------------
PREFIX=${PREFIX:-$PREFIX_DEFAULT}
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got '$PREFIX'" "e.g. --prefix /opt/$NAME" 2 ;; esac
case "$PREFIX$ROOT" in *[!A-Za-z0-9/._+@:-]*) die "--prefix/--root may hold only letters, digits and / . _ + @ : -" \
    "pick a path without spaces or shell characters, e.g. /opt/$NAME" 2 ;; esac
# No "." or ".." part (the release would land outside PREFIX, or outside ROOT), no empty part.
case "$PREFIX/" in */./*|*/../*|*//*) die "--prefix may not hold '.', '..' or empty parts, got '$PREFIX'" \
    "e.g. --prefix /opt/$NAME" 2 ;; esac
case "$ROOT" in /*) ;; *) ROOT=$(cd "$ROOT" 2>/dev/null && pwd -P) || die "--root $ROOT does not exist" "" 2 ;; esac
ROOT=${ROOT%/}
DEST=$ROOT$PREFIX
[ -n "$ROOT" ] || check_device

mkdir -p "$DEST/releases" 2>/dev/null && touch "$DEST/releases/.write-test.$$" 2>/dev/null \
    || die "cannot write to $DEST (read-only file system, or no permission)" \
           "remount it read-write, run as a user who may write there (sudo), or pick another --prefix" 3
rm -f "$DEST/releases/.write-test.$$"
# One install at a time per prefix (mkdir is atomic); a stale lock from a killed install names itself.
if ! mkdir "$DEST/.install.lock" 2>/dev/null; then
    die "another install into $PREFIX is running (or one was killed: $DEST/.install.lock exists)" \
        "wait for it, or remove $DEST/.install.lock if no install.sh runs" 1
fi
LOCK=$DEST/.install.lock

# A public key on the device (PREFIX/trusted-key.pub.pem, or $BENTO_COMPILE_PUBLIC_KEY naming a key file)
# means every bundle installed here must be signed by it (SHA256SUMS.sig over SHA256SUMS, Ed25519).
KEY=${BENTO_COMPILE_PUBLIC_KEY:-}
[ -n "$KEY" ] || [ ! -f "$DEST/trusted-key.pub.pem" ] || KEY=$DEST/trusted-key.pub.pem
if [ -n "$KEY" ]; then
    [ -f "$KEY" ] || die "the public key $KEY does not exist" "set BENTO_COMPILE_PUBLIC_KEY to a *.pub.pem file" 4
    command -v openssl >/dev/null 2>&1 || die "a public key is configured ($KEY) but openssl is not installed to check the bundle's signature" \
        "apt-get install openssl" 4
    [ -f SHA256SUMS.sig ] || die "this bundle is not signed, and this device requires a signature by $KEY" \
        "build it with: bento-compile target edge $TAG --sign-key KEY" 4
    openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig >/dev/null 2>&1 \
        || die "this bundle's signature does not verify with $KEY (signed by another key, or changed)" \
               "flash a bundle signed with the matching private key" 4
    say "signature verified with $KEY"
fi

REL=$DEST/releases/$RELEASE_ID
if [ -f "$REL/.installed" ] || { [ -n "$ROOT" ] && [ -f "$REL/.pending" ]; }; then
    say "release $RELEASE_ID is already there; switching to it"
elif [ -z "$ROOT" ] && [ -f "$REL/.pending" ]; then
    say "release $RELEASE_ID was flashed and not started yet; finishing it"
    finish_release "$REL"
else
    rm -rf "$REL" "$REL.partial"   # leftovers of an interrupted install
    CLEANUP="$REL.partial $REL"
    mkdir "$REL.partial"
    tar -cf - . | tar -xf - -C "$REL.partial"
    mv "$REL.partial" "$REL"        # the venv must be made at its final path
    if [ -n "$ROOT" ]; then
        touch "$REL/.pending"
        say "venv deferred to the device's first start (the unit runs install.sh --finish)"
    else
        finish_release "$REL"
    fi
fi

# ---- 3. switch current, keep previous, prune the rest ---------------------------------------
swap_link() {  # swap_link TARGET LINK: replace LINK atomically (rename(2) of a fresh symlink)
    ln -s "$1" "$2.tmp.$$"
    mv -T "$2.tmp.$$" "$2" 2>/dev/null || python3 -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$2.tmp.$$" "$2"
}
cd "$DEST"
new=releases/$RELEASE_ID
old=
[ -L current ] && old=$(readlink current)
if [ "$old" != "$new" ]; then
    [ -z "$old" ] || swap_link "$old" previous
    swap_link "$new" current
    say "current -> $new${old:+ (previous -> $old)}"
fi
CLEANUP=
keep_prev=
[ -L previous ] && keep_prev=$(readlink previous)
for dir in releases/*; do
    [ -d "$dir" ] || continue
    [ "$dir" = "$new" ] || [ "$dir" = "$keep_prev" ] || { rm -rf "$dir"; say "removed old release $dir"; }
done
[ -f config.env ] || cp "$new/config.env" config.env

# ---- 4. the systemd unit ---------------------------------------------------------------------
if [ "$SERVICE" = 1 ]; then
    unitdir=$ROOT/etc/systemd/system
    if mkdir -p "$unitdir" 2>/dev/null && [ -w "$unitdir" ]; then
        sed "s|@PREFIX@|$PREFIX|g" "$new/$SERVICE_NAME.service" > "$unitdir/.$SERVICE_NAME.service.tmp"
        mv "$unitdir/.$SERVICE_NAME.service.tmp" "$unitdir/$SERVICE_NAME.service"
        if [ -n "$ROOT" ]; then
            mkdir -p "$unitdir/multi-user.target.wants"
            ln -sfn "/etc/systemd/system/$SERVICE_NAME.service" "$unitdir/multi-user.target.wants/$SERVICE_NAME.service"
            say "installed and enabled $SERVICE_NAME.service under $ROOT (starts on the device's next boot)"
        elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl daemon-reload
            systemctl enable --quiet "$SERVICE_NAME.service"
            if [ "$START" = 1 ]; then
                if ! systemctl restart "$SERVICE_NAME.service"; then
                    if [ -n "$old" ] && [ "$old" != "$new" ]; then
                        swap_link "$old" current
                        swap_link "$new" previous
                        systemctl restart "$SERVICE_NAME.service" || true
                        die "$SERVICE_NAME.service did not start with $new; switched back to $old" \
                            "see journalctl -u $SERVICE_NAME; $new stays installed as 'previous'" 1
                    fi
                    die "$SERVICE_NAME.service did not start" "see journalctl -u $SERVICE_NAME" 1
                fi
                say "started $SERVICE_NAME.service (journalctl -u $SERVICE_NAME to follow it)"
            fi
        else
            say "systemd is not running here: installed $unitdir/$SERVICE_NAME.service; start by hand: $PREFIX/current/run serve"
        fi
    else
        say "cannot write $unitdir (not root?): no service installed; start by hand: $PREFIX/current/run serve"
    fi
fi
say "installed $TAG into $PREFIX"
echo "$PREFIX/$new"
