# smtpsink container image: the SMTP sink (and smtpbench) on Debian 12 slim.
#
#   docker build -t smtpsink .
#   podman build --format docker -t smtpsink .   (OCI format drops HEALTHCHECK)
#   podman run --rm -p 127.0.0.1:2525:2525 smtpsink
#   podman run --rm -p 127.0.0.1:2525:2525 -e SMTPSINK_EXIT_AFTER=3 \
#       -e SMTPSINK_EXPECT=messages=3 smtpsink      # exit status: the verdict
#
# Configuration is by environment: every option --foo-bar can be given as
# SMTPSINK_FOO_BAR (repeatable options comma-separated, booleans 1/true/yes/on);
# arguments after the image name are passed to smtpsink and win over the
# environment.  The HEALTHCHECK runs `smtpsink check`, which reads the same
# SMTPSINK_LISTEN and needs no arguments.  See docs/ci.md.
#
# io_uring: container runtimes' default seccomp profiles often block
# io_uring_setup (Docker since 25.0, for one).  With the default --io auto
# smtpsink then says "...; using epoll" on stderr and serves over epoll; no
# setting is needed.  `--security-opt seccomp=unconfined` lets it use io_uring.
#
# scripts/container-test.sh builds and tests this image with podman without
# any registry: it imports a debootstrapped Debian 12 rootfs under the name
# below.

# ---- build stage: compile with CMake (no tests), install into /out --------
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make cmake pkg-config \
      liburing-dev libjemalloc-dev libjansson-dev libssl-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The context has no .git: --build-arg GIT_REV=$(git rev-parse --short=12 HEAD)
# names the revision in --version and every report.
ARG GIT_REV=unknown
RUN cmake -S . -B /tmp/build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSINK_TESTS=OFF \
      -DSINK_GIT_REV="$GIT_REV" \
 && cmake --build /tmp/build -j "$(nproc)" \
 && DESTDIR=/out cmake --install /tmp/build --prefix /usr/local --strip \
 && /out/usr/local/bin/smtpsink --version

# ---- runtime stage: the runtime libraries and the two programs -------------
FROM debian:bookworm-slim
# liburing2 (io_uring), libjemalloc2 (allocator), libjansson4 (JSON),
# libssl3 (TLS: STARTTLS, implicit TLS, self-signed certificates),
# libmicrohttpd12 (--http: /metrics, health, stats and captured messages).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      liburing2 libjemalloc2 libjansson4 libssl3 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 2525 --user-group --home-dir /var/lib/smtpsink --create-home \
      --shell /usr/sbin/nologin smtpsink
COPY --from=build /out/usr/local/bin/smtpsink /out/usr/local/bin/smtpbench /usr/local/bin/
COPY --from=build /out/usr/local/share/man/man1/ /usr/local/share/man/man1/

USER smtpsink
# A writable working directory: relative --json/--ready-file/--tls-cert-out
# paths land here (mount a volume on it to keep them).
WORKDIR /var/lib/smtpsink
# Listen on every interface inside the container; publish the port to choose
# who can reach it (e.g. -p 127.0.0.1:2525:2525).
ENV SMTPSINK_LISTEN=0.0.0.0:2525
# 2525: SMTP.  8025: the HTTP admin endpoint when asked for with
# SMTPSINK_HTTP=0.0.0.0:8025 (/metrics, /readyz, /api/v1/stats, and with
# SMTPSINK_CAPTURE=/var/lib/smtpsink/mail /api/v1/messages).
EXPOSE 2525 8025
# SIGTERM (the default stop signal) stops smtpsink cleanly: it gives messages
# in progress --drain-timeout (5 s) and always exits within that + 1 s, inside
# the usual 10 s stop timeout.  The exit status is the CI verdict (0 ok,
# 3 an --expect failed, 1 runtime failure, 2 usage).
STOPSIGNAL SIGTERM
# `smtpsink check` connects to SMTPSINK_LISTEN (0.0.0.0 meaning 127.0.0.1),
# expects 220, EHLO, QUIT; it bounds itself at 5 s.  Each check is one SMTP
# session in the counters (sessions, conns_accepted), never a message.
# (--start-interval is left out: podman and Docker < 25 do not know it.)
HEALTHCHECK --interval=5s --timeout=10s --start-period=5s --retries=3 \
  CMD ["smtpsink", "check"]
ENTRYPOINT ["smtpsink"]
LABEL org.opencontainers.image.title="smtpsink" \
      org.opencontainers.image.description="SMTP sink for CI and load tests: accepts mail as fast as possible and discards it; --expect makes the exit status the verdict"
