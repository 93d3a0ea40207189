# The operator image: one static binary (make build-static) on a minimal
# base, run as the distroless "nonroot" user with a read-only root filesystem
# (the Deployment sets readOnlyRootFilesystem; nothing here writes to disk).
#
# `make image` builds it without a Docker daemon (buildah, vfs storage,
# chroot isolation) from a context folder that holds only the binary, so the
# build never walks the multi-gigabyte target/ tree:
#
#   make image                                   # BASE=scratch, offline
#   make image BASE=gcr.io/distroless/static-debian12:nonroot
#
# The base is an argument: distroless/static adds /etc/passwd, tzdata and CA
# files, none of which the binary needs (its TLS roots are compiled in, names
# are resolved in Rust), so `scratch` gives a working image too, and it is
# what the test uses on a machine that cannot pull.
ARG BASE=gcr.io/distroless/static-debian12:nonroot
FROM ${BASE}
COPY --chmod=0555 aiops-operator /aiops-operator
# Numeric, so it needs no /etc/passwd (scratch has none); 65532 is
# distroless's nonroot.
USER 65532:65532
ENTRYPOINT ["/aiops-operator"]
CMD ["run"]
