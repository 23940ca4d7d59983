#!/usr/bin/env bash
# Install (or update, or remove) corona-monitor as a systemd service on a tower node.
#
#   sudo systemd/install.sh               install or update from the checkout this script is in
#   sudo systemd/install.sh --uninstall   remove the service and /opt/corona-monitor; keep the
#                                         config, the outbox and the user (add --purge for those)
#   systemd/install.sh --dry-run [...]    print what would be done, change nothing (no root needed)
#   systemd/install.sh --print-config     print the config.yaml a fresh install would write
#
# Idempotent: running it again updates the code and the unit, and never overwrites
# /etc/corona-monitor/config.yaml, asound.conf or the password file once they exist.
set -euo pipefail

readonly SERVICE=corona-monitor
readonly SERVICE_USER=corona
readonly AUDIO_GROUP=audio
readonly PREFIX=/opt/corona-monitor
readonly VENV="$PREFIX/venv"
readonly MODELS="$PREFIX/models"
readonly CONFIG_DIR=/etc/corona-monitor
readonly CONFIG="$CONFIG_DIR/config.yaml"
readonly PASSWORD_FILE="$CONFIG_DIR/mqtt-password"
readonly ALSA_CONFIG="$CONFIG_DIR/asound.conf"
readonly SYSTEM_ALSA_CONFIG=/usr/share/alsa/alsa.conf
readonly STATE_DIR=/var/lib/corona-monitor
readonly UNIT_DIR=/etc/systemd/system
readonly UNIT="$UNIT_DIR/$SERVICE.service"
readonly MODEL_NAME=corona-demo.tflite
readonly MIN_PYTHON=3.11

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

DRY_RUN=0
UNINSTALL=0
PURGE=0
PRINT_CONFIG=0

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

# Every change to the system goes through run, so --dry-run shows exactly what would happen.
run() {
    if ((DRY_RUN)); then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        echo "+ $*"
        "$@"
    fi
}

# The repository's documented config, with the model path made absolute for /opt.
installed_config() {
    local source="$REPO/config.yaml"
    [[ -f "$source" ]] || die "$source: missing; run this script from a corona-monitor checkout"
    # The checkout's default (the model beside the package) does not exist in a /opt install:
    # the commented example line becomes the real setting.
    grep -q '^  # path: models/corona-demo.tflite$' "$source" \
        || die "$source: no '# path: models/corona-demo.tflite' line to point at $MODELS"
    sed "s|^  # path: models/corona-demo.tflite\$|  path: $MODELS/$MODEL_NAME|" "$source"
}

check_python() {
    command -v python3 >/dev/null || die "python3 not found (need >= $MIN_PYTHON)"
    python3 - "$MIN_PYTHON" <<'EOF' || die "python3 >= $MIN_PYTHON with the venv module is required (apt install python3-venv)"
import sys, venv, ensurepip  # noqa: F401  (ensurepip: Debian ships it in python3-venv)
need = tuple(int(p) for p in sys.argv[1].split("."))
sys.exit(0 if sys.version_info[:2] >= need else 1)
EOF
}

install_user() {
    if ! getent group "$AUDIO_GROUP" >/dev/null; then
        run groupadd --system "$AUDIO_GROUP"
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        echo "user $SERVICE_USER exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "corona-monitor daemon" "$SERVICE_USER"
    fi
    # The microphone (/dev/snd/*) belongs to the audio group.
    if ! id -nG "$SERVICE_USER" 2>/dev/null | tr ' ' '\n' | grep -qx "$AUDIO_GROUP"; then
        run usermod --append --groups "$AUDIO_GROUP" "$SERVICE_USER"
    fi
}

install_code() {
    run install -d -m 0755 "$PREFIX"
    if [[ ! -x "$VENV/bin/python" ]]; then
        run python3 -m venv "$VENV"
    fi
    # The base install only: the edge node never needs the [train] extra (TensorFlow, librosa).
    # Pinned to the versions the tests ran with (the constraints also pin the build backend), and
    # wheels only: pip runs as root here, and building a source archive runs its code.
    run env PIP_CONSTRAINT="$REPO/systemd/tower-constraints.txt" "$VENV/bin/python" -m pip \
        install --no-cache-dir --disable-pip-version-check --only-binary=:all: "$REPO"
    run install -d -m 0755 "$MODELS"
    local found=0 model
    for model in "$REPO"/models/*.tflite "$REPO"/models/*.json "$REPO"/models/*.md; do
        [[ -e "$model" ]] || continue
        found=1
        run install -m 0644 "$model" "$MODELS/"
    done
    ((found)) || echo "warning: no model files in $REPO/models; put $MODEL_NAME in $MODELS" >&2
}

install_config() {
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONFIG_DIR"
    if [[ -e "$CONFIG" ]]; then
        echo "keeping the existing $CONFIG"
    else
        local tmp
        tmp="$(mktemp)"
        installed_config >"$tmp"
        run install -m 0640 -o root -g "$SERVICE_USER" "$tmp" "$CONFIG"
        rm -f "$tmp"
    fi
    install_alsa_config
    if [[ -e "$PASSWORD_FILE" ]]; then
        echo "keeping the existing $PASSWORD_FILE"
    else
        # Empty, with the right owner and mode, for the technician to fill in.
        run install -m 0640 -o root -g "$SERVICE_USER" /dev/null "$PASSWORD_FILE"
    fi
}

# The unit's ALSA_CONFIG_PATH: alsa.conf without the conf.d folders (systemd/asound.conf says
# why). Kept once it exists, like config.yaml: a technician may define the microphone in it.
install_alsa_config() {
    # The shipped file includes alsa.conf; ALSA fails to initialise without it.
    [[ -f "$SYSTEM_ALSA_CONFIG" ]] || die "$SYSTEM_ALSA_CONFIG: missing (apt install libasound2-data)"
    if [[ -e "$ALSA_CONFIG" ]]; then
        echo "keeping the existing $ALSA_CONFIG"
    else
        run install -m 0644 -o root -g root "$REPO/systemd/asound.conf" "$ALSA_CONFIG"
    fi
}

install_unit() {
    run install -m 0644 "$REPO/systemd/$SERVICE.service" "$UNIT"
    run systemctl daemon-reload
    run systemctl enable "$SERVICE.service"
    # An update takes effect at once on a running node; a fresh node waits for its MQTT settings.
    if systemctl is-active --quiet "$SERVICE.service" 2>/dev/null; then
        run systemctl restart "$SERVICE.service"
    fi
}

uninstall() {
    if [[ -e "$UNIT" ]]; then
        run systemctl disable --now "$SERVICE.service"
        run rm -f "$UNIT"
        run systemctl daemon-reload
    fi
    if [[ -e "$PREFIX" ]]; then
        run rm -rf "$PREFIX"
    fi
    if ((PURGE)); then
        if [[ -e "$CONFIG_DIR" ]]; then
            run rm -rf "$CONFIG_DIR"
        fi
        if [[ -e "$STATE_DIR" ]]; then
            run rm -rf "$STATE_DIR"
        fi
        if getent passwd "$SERVICE_USER" >/dev/null; then
            run userdel "$SERVICE_USER"
        fi
    else
        echo "kept: $CONFIG_DIR (config, ALSA config, password), $STATE_DIR (outbox), user $SERVICE_USER;" \
            "--uninstall --purge removes them"
    fi
}

main() {
    while (($#)); do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --print-config) PRINT_CONFIG=1 ;;
            -h | --help)
                usage
                return 0
                ;;
            *) die "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
    if ((PRINT_CONFIG)); then
        installed_config
        return 0
    fi
    if ((PURGE && !UNINSTALL)); then
        die "--purge only goes with --uninstall"
    fi
    if ((!DRY_RUN)) && ((EUID != 0)); then
        die "must run as root (sudo), or try --dry-run"
    fi
    if ((UNINSTALL)); then
        uninstall
        if ((DRY_RUN)); then
            echo "dry run: nothing was changed"
        else
            echo "corona-monitor removed"
        fi
        return 0
    fi
    check_python
    [[ -f "$REPO/pyproject.toml" ]] || die "$REPO: not a corona-monitor checkout (no pyproject.toml)"
    install_user
    install_code
    install_config
    install_unit
    if ((DRY_RUN)); then
        echo "dry run: nothing was changed"
        return 0
    fi
    cat <<EOF

corona-monitor is installed and enabled. Next:
  1. set mqtt.host (and tls, username) in $CONFIG; put the password on the first line of
     $PASSWORD_FILE and set mqtt.password_file: $PASSWORD_FILE
  2. check it (with the service's ALSA config, so it lists the devices the service sees):
       sudo -u $SERVICE_USER env ALSA_CONFIG_PATH=$ALSA_CONFIG \\
         $VENV/bin/corona-monitor --config $CONFIG check-config
  3. start it:  systemctl start $SERVICE && journalctl -u $SERVICE -f
EOF
}

main "$@"
