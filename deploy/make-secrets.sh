#!/bin/sh
# Creates the secret files compose.yaml mounts, in deploy/secrets/, once.
# Never overwrites one that exists: the secret key in particular must stay
# the one the database was first started with (docs/operations.md,
# "Secret-key custody"). Run it as root so that each file can belong to the
# user of the container that reads it; otherwise the files are made readable
# by every user of the containers (mode 444) in a folder only you can open.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 700 secrets

MOSQUITTO_IMAGE=${MOSQUITTO_IMAGE:-eclipse-mosquitto:2.0.20}
KEYAUTOMAT_UID=10001   # the image's user (Dockerfile)
POSTGRES_UID=999       # the postgres image's user
MOSQUITTO_UID=1883     # the eclipse-mosquitto image's user

random() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

# put FILE UID: writes standard input to secrets/FILE, for the container user UID.
put() {
    if [ -e "secrets/$1" ]; then
        echo "kept    deploy/secrets/$1"
        cat >/dev/null
        return
    fi
    cat >"secrets/$1"
    if [ "$(id -u)" = 0 ]; then
        chown "$2:$2" "secrets/$1"
        chmod 400 "secrets/$1"
    else
        chmod 444 "secrets/$1"
    fi
    echo "created deploy/secrets/$1"
}

# A Fernet key: urlsafe base64 of 32 random bytes, with its padding.
head -c 32 /dev/urandom | base64 | tr '+/' '-_' | put keyautomat_secret_key "$KEYAUTOMAT_UID"

if [ ! -e secrets/postgres_password ]; then
    db_password=$(random)
    printf '%s' "$db_password" | put postgres_password "$POSTGRES_UID"
    printf 'postgresql+psycopg://keyautomat:%s@postgres:5432/keyautomat' "$db_password" \
        | put database_url "$KEYAUTOMAT_UID"
fi

if [ ! -e secrets/mqtt_url ]; then
    MQTT_PASSWORD=$(random)
    export MQTT_PASSWORD
    # The broker keeps a salted hash; mosquitto_passwd makes it. The password
    # travels in the environment, not on a command line.
    hashed=$(docker run --rm -e MQTT_PASSWORD "$MOSQUITTO_IMAGE" sh -c \
        'mosquitto_passwd -c -b /tmp/passwd keyautomat-gateway "$MQTT_PASSWORD" >/dev/null && cat /tmp/passwd')
    printf '%s\n' "$hashed" | put mosquitto_passwd "$MOSQUITTO_UID"
    printf 'mqtt://keyautomat-gateway:%s@mosquitto:1883' "$MQTT_PASSWORD" | put mqtt_url "$KEYAUTOMAT_UID"
fi
