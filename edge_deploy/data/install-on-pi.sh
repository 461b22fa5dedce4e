#!/usr/bin/env bash
# Install the edge runtime and its agent service on a running Raspberry Pi (Raspberry Pi OS, or
# any Debian-based system with systemd).
#
#   sudo bash install-on-pi.sh --wheel edge_runtime-0.1.0-py3-none-any.whl \
#        --bundle mobilenet_v2-v1.tar.gz --config agent.toml
#
# Steps, each done only when something is missing or different, so running the script twice
# changes nothing the second time:
#   1. apt: python3-venv, and python3-picamera2 when the device profile's camera is the Pi camera
#   2. the system user and group `edge` (in group video for the camera)
#   3. /opt/edge/venv: a virtual environment with --system-site-packages, so the picamera2 and
#      libcamera that apt installs stay importable (they cannot be pip-installed)
#   4. pip install of the wheel with the extras the detected device profile needs
#      (`edge profiles detect` decides; --profile or EDGE_PROFILE overrides)
#   5. /etc/edge/agent.toml (root:edge 0640) and /var/lib/edge/bundles/<bundle>
#   6. /etc/systemd/system/edge-agent.service, enabled, and (re)started when anything changed
#
# pip reads its usual configuration, so PIP_INDEX_URL, PIP_FIND_LINKS or /etc/pip.conf (piwheels on
# Raspberry Pi OS) apply. When systemd is not running (a chroot, an image build) the service is
# enabled but not started.
set -euo pipefail

VENV=/opt/edge/venv
CONF_DIR=/etc/edge
STATE_DIR=/var/lib/edge
UNIT_PATH=/etc/systemd/system/edge-agent.service
STAMP="$VENV/.edge-install"

WHEEL=""
BUNDLE=""
CONFIG=""
EXTRAS=""
PROFILE="${EDGE_PROFILE:-}"
START=1

log() { printf 'install-on-pi: %s\n' "$*" >&2; }
die() { printf 'install-on-pi: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --wheel PATH|REQ   the edge-runtime wheel (pip wheel --no-deps PROJECT -w dist), or a pip
                     requirement such as edge-runtime==0.1.0 when it is on your index (required)
  --bundle PATH      a model bundle (.tar.gz or directory) to install under /var/lib/edge/bundles/
  --config PATH      the agent config, installed as /etc/edge/agent.toml
  --profile NAME     device profile to install for instead of the detected one
  --extras LIST      pip extras instead of the profile's, comma-separated (e.g. tflite,device)
  --no-start         enable the service but do not start or restart it
  -h, --help         this help
USAGE
}

while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL="${2:?--wheel needs a value}"; shift 2 ;;
        --bundle) BUNDLE="${2:?--bundle needs a value}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
        --profile) PROFILE="${2:?--profile needs a value}"; shift 2 ;;
        --extras) EXTRAS="${2:?--extras needs a value}"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# -- check everything before changing anything ---------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (sudo bash $0 ...)"
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
    die "needs a Debian-based system (apt-get, dpkg-query)"
command -v python3 >/dev/null || die "python3 not found (apt-get install python3)"
[ -n "$WHEEL" ] || die "--wheel is required: the edge-runtime wheel file (see --help)"
case "$WHEEL" in
    *.whl) [ -f "$WHEEL" ] || die "$WHEEL: no such wheel file"; WHEEL="$(readlink -f "$WHEEL")" ;;
    *[!A-Za-z0-9._=\<\>!~-]*)
        die "--wheel: expected a .whl file or a requirement such as edge-runtime==0.1.0 (got $WHEEL)" ;;
esac
with_extras() {  # requirement-or-wheel extras -> pip argument with the extras in the right place
    case "$1" in
        *.whl) printf '%s[%s]' "$1" "$2" ;;
        *) local name="${1%%[=<>!~]*}"; printf '%s[%s]%s' "$name" "$2" "${1#"$name"}" ;;
    esac
}
if [ -n "$BUNDLE" ]; then
    [ -e "$BUNDLE" ] || die "$BUNDLE: no such bundle"
    case "$BUNDLE" in
        *.tar.gz|*.tgz) [ -f "$BUNDLE" ] || die "$BUNDLE: not a file" ;;
        *) [ -d "$BUNDLE" ] && [ -f "$BUNDLE/manifest.json" ] ||
            die "$BUNDLE: not a bundle (.tar.gz, or a directory with manifest.json)" ;;
    esac
fi
if [ -n "$CONFIG" ]; then
    [ -f "$CONFIG" ] || die "$CONFIG: no such config file"
fi
case "$EXTRAS" in *[!a-z0-9,_-]*) die "--extras: only names separated by commas (got $EXTRAS)" ;; esac

CHANGED=0

# -- 1. apt packages ------------------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    CHANGED=1
}
apt_install python3-venv

# -- 2. user and directories ----------------------------------------------------------------------------
if ! getent group edge >/dev/null; then
    log "creating group edge"; groupadd --system edge; CHANGED=1
fi
if ! getent passwd edge >/dev/null; then
    log "creating user edge"
    useradd --system --gid edge --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin \
        --comment "edge agent" edge
    CHANGED=1
fi
if getent group video >/dev/null && ! id -nG edge | tr ' ' '\n' | grep -qx video; then
    usermod -a -G video edge; CHANGED=1
fi
ensure_dir() {  # path mode owner group
    if [ ! -d "$1" ] || [ "$(stat -c '%a %U %G' "$1" 2>/dev/null)" != "$2 $3 $4" ]; then
        install -d -m "$2" -o "$3" -g "$4" "$1"; CHANGED=1
    fi
}
ensure_dir "$CONF_DIR" 755 root root
ensure_dir /opt/edge 755 root root
ensure_dir "$STATE_DIR" 750 edge edge
ensure_dir "$STATE_DIR/bundles" 750 edge edge

# -- 3. virtual environment -----------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (--system-site-packages)"
    python3 -m venv --system-site-packages "$VENV"
    CHANGED=1
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check --no-input "$@"; }

# -- 4. the wheel, with the profile's extras ------------------------------------------------------------
# The stamp records what was installed last time (wheel hash or requirement, extras), so an
# unchanged wheel is not reinstalled.
if [ -f "$WHEEL" ]; then WANT_ID="$(sha256sum "$WHEEL" | cut -d' ' -f1)"; else WANT_ID="$WHEEL"; fi
HAVE=""
[ -f "$STAMP" ] && HAVE="$(cat "$STAMP")"
if [ "${HAVE%%$'\n'*}" != "$WANT_ID" ] || ! "$PY" -c 'import edge_runtime' 2>/dev/null; then
    log "pip install $WHEEL"
    pip_install --force-reinstall --no-deps "$WHEEL"
    pip_install "$WHEEL"
    HAVE=""
    CHANGED=1
fi
PLAN="$("$PY" - "$PROFILE" <<'PYEOF'
import sys
from device_profiles import load_profile, profile_for
from edge_deploy import install_plan
name = sys.argv[1]
profile = load_profile(name) if name else profile_for(None)
sys.stdout.write(install_plan(profile).shell())
PYEOF
)" || die "cannot determine the device profile (pass --profile NAME; see edge profiles list)"
plan() { printf '%s\n' "$PLAN" | sed -n "s/^$1=//p"; }
[ -n "$EXTRAS" ] || EXTRAS="$(plan extras)"
log "device profile $(plan profile): extras [$EXTRAS]"
APT_MORE="$(plan apt)"
if [ -n "$APT_MORE" ]; then
    IFS=, read -r -a pkgs <<<"$APT_MORE"
    apt_install "${pkgs[@]}"
fi
WANT="$WANT_ID"$'\n'"$EXTRAS"
if [ "$HAVE" != "$WANT" ]; then
    if [ -n "$EXTRAS" ]; then pip_install "$(with_extras "$WHEEL" "$EXTRAS")"; fi
    for p in $(plan optional_pip | tr ',' ' '); do
        pip_install "$p" || log "warning: optional package $p could not be installed (no wheel for this platform?)"
    done
    printf '%s' "$WANT" >"$STAMP"
    CHANGED=1
fi

# -- 5. config and bundle -------------------------------------------------------------------------------
install_file() {  # src dest mode owner group
    if ! cmp -s "$1" "$2" || [ "$(stat -c '%a %U %G' "$2" 2>/dev/null)" != "$3 $4 $5" ]; then
        log "installing $2"
        install -m "$3" -o "$4" -g "$5" "$1" "$2.tmp"
        mv -f "$2.tmp" "$2"
        CHANGED=1
    fi
}
if [ -n "$CONFIG" ]; then
    # The config may hold the device's cloud token: readable by the agent, not by other users.
    install_file "$CONFIG" "$CONF_DIR/agent.toml" 640 root edge
fi
if [ -n "$BUNDLE" ]; then
    dest="$STATE_DIR/bundles/$(basename "$BUNDLE")"
    if [ -d "$BUNDLE" ]; then
        if ! diff -rq "$BUNDLE" "$dest" >/dev/null 2>&1; then
            log "installing $dest"
            rm -rf "$dest.tmp"
            cp -r "$BUNDLE" "$dest.tmp"
            chown -R edge:edge "$dest.tmp"
            rm -rf "$dest"
            mv "$dest.tmp" "$dest"
            CHANGED=1
        fi
    else
        install_file "$BUNDLE" "$dest" 640 edge edge
    fi
fi

# -- 6. the service -------------------------------------------------------------------------------------
# The unit comes from the installed package, so it always matches the installed agent.
UNIT_TMP="$(mktemp)"
trap 'rm -f "$UNIT_TMP"' EXIT
"$PY" -c 'import sys; from edge_deploy import agent_unit; sys.stdout.write(agent_unit())' >"$UNIT_TMP"
if ! cmp -s "$UNIT_TMP" "$UNIT_PATH"; then
    install -d -m 755 "$(dirname "$UNIT_PATH")"
    install_file "$UNIT_TMP" "$UNIT_PATH" 644 root root
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
if ! systemctl is-enabled --quiet edge-agent.service; then
    systemctl enable edge-agent.service
    CHANGED=1
fi
if [ "$START" = 1 ]; then
    if [ ! -d /run/systemd/system ]; then
        log "systemd is not running here: edge-agent.service starts at the next boot"
    elif [ "$CHANGED" = 1 ]; then
        systemctl restart --no-block edge-agent.service
    elif ! systemctl is-active --quiet edge-agent.service; then
        systemctl start --no-block edge-agent.service
    fi
fi
if [ "$CHANGED" = 1 ]; then log "done"; else log "nothing to change"; fi
