#!/usr/bin/env bash
# Assemble dist/edge-agent_<version>_<arch>.deb from the onedir build in dist/edge-agent/
# (packaging/build.sh calls this after PyInstaller). Files are owned by root in the archive;
# the system user and the owners/modes of its directories are made by the maintainer scripts
# (packaging/deb/postinst) from the sysusers.d and tmpfiles.d files shipped here.
#
#   /opt/edge-agent/                        the self-contained agent (binary + _internal/)
#   /usr/bin/edge-agent                     launcher: `exec` to /opt/edge-agent/edge-agent-exec,
#                                           everything else to /opt/edge-agent/edge-agent
#   /usr/bin/edge-verify                    -> /opt/edge-agent/edge-verify (offline receipts)
#   /etc/edge-agent/agent.toml              default configuration (a conffile, mode 0640)
#   /usr/lib/systemd/system/edge-agent.service
#   /usr/lib/sysusers.d/edge-agent.conf     user edge-agent, group edge-agent-clients
#   /usr/lib/tmpfiles.d/edge-agent.conf     /etc, /var/lib and /run directories
#   /etc/edge-agent/firmware_profiles/*.toml   the shipped firmware profiles (conffiles: the
#                                           agent measures with <its enrolled profile>.toml)
#   /usr/share/doc/edge-agent/              deploy.md, copyright
#   /usr/share/man/man1/edge-{agent,verify}.1.gz                   man pages
#   /usr/share/bash-completion/completions/edge-{agent,verify}    shell completion
#   /usr/share/zsh/vendor-completions/_edge-{agent,verify}           (from build/cli-docs-deb/,
#   /usr/share/fish/vendor_completions.d/edge-{agent,verify}.fish     scripts/gen_cli_docs.py)
#
# DEB_MAINTAINER overrides the Maintainer field.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SRC=dist/edge-agent
DOCS=build/cli-docs-deb
TOOLS=(edge-agent edge-verify)
STAGE=build/deb/edge-agent
MAINTAINER="${DEB_MAINTAINER:-edgegov maintainers <maintainers@edgegov.invalid>}"

[[ -x "$SRC/edge-agent" ]] || {
    echo "make-deb: $SRC/edge-agent is missing; run packaging/build.sh" >&2
    exit 1
}
[[ -f "$DOCS/man/man1/edge-agent.1" ]] || {
    echo "make-deb: $DOCS is missing; run packaging/build.sh" >&2
    exit 1
}
VERSION="$("$SRC/edge-agent" --version | awk '{print $2}')"
ARCH="$(dpkg --print-architecture)"
GLIBC="$(dpkg-query -W -f='${Version}' libc6 | cut -d- -f1)"

rm -rf "$STAGE"
install -d -m 0755 "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" \
    "$STAGE/usr/lib/systemd/system" "$STAGE/usr/lib/sysusers.d" "$STAGE/usr/lib/tmpfiles.d" \
    "$STAGE/usr/share/doc/edge-agent"
install -d -m 0750 "$STAGE/etc/edge-agent"
install -d -m 0755 "$STAGE/etc/edge-agent/firmware_profiles"

cp -a "$SRC" "$STAGE/opt/edge-agent"
chmod -R u+rwX,go+rX,go-w "$STAGE/opt/edge-agent"
install -m 0755 packaging/deb/edge-agent "$STAGE/usr/bin/edge-agent"
ln -s /opt/edge-agent/edge-verify "$STAGE/usr/bin/edge-verify"
install -m 0640 packaging/deb/agent.toml "$STAGE/etc/edge-agent/agent.toml"
install -m 0644 systemd/edge-agent.service "$STAGE/usr/lib/systemd/system/"
install -m 0644 packaging/deb/edge-agent.sysusers "$STAGE/usr/lib/sysusers.d/edge-agent.conf"
install -m 0644 packaging/deb/edge-agent.tmpfiles "$STAGE/usr/lib/tmpfiles.d/edge-agent.conf"
find firmware_profiles -maxdepth 1 -name '*.toml' -type f \
    -exec install -m 0644 -t "$STAGE/etc/edge-agent/firmware_profiles" {} +
install -m 0644 docs/deploy.md packaging/deb/copyright "$STAGE/usr/share/doc/edge-agent/"
for tool in "${TOOLS[@]}"; do
    install -D -m 0644 -t "$STAGE/usr/share/bash-completion/completions" \
        "$DOCS/bash-completion/completions/$tool"
    install -D -m 0644 -t "$STAGE/usr/share/zsh/vendor-completions" \
        "$DOCS/zsh/vendor-completions/_$tool"
    install -D -m 0644 -t "$STAGE/usr/share/fish/vendor_completions.d" \
        "$DOCS/fish/vendor_completions.d/$tool.fish"
    install -d -m 0755 "$STAGE/usr/share/man/man1"
    gzip -9 --no-name --stdout "$DOCS/man/man1/$tool.1" >"$STAGE/usr/share/man/man1/$tool.1.gz"
    chmod 0644 "$STAGE/usr/share/man/man1/$tool.1.gz"
done

install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$STAGE/DEBIAN/"
{
    cat packaging/deb/conffiles
    (cd "$STAGE" && find etc/edge-agent/firmware_profiles -name '*.toml' -type f | sort | sed 's|^|/|')
} >"$STAGE/DEBIAN/conffiles"
chmod 0644 "$STAGE/DEBIAN/conffiles"
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@GLIBC@/$GLIBC/" \
    -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s/@INSTALLED_SIZE@/$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)/" \
    packaging/deb/control.in >"$STAGE/DEBIAN/control"

OUT="dist/edge-agent_${VERSION}_${ARCH}.deb"
# xz level 1: about a third of the default level's time on a two-core builder, for 7% more bytes.
dpkg-deb --root-owner-group -Zxz -z1 --build "$STAGE" "$OUT" >/dev/null
echo "make-deb: $OUT"
