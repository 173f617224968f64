#!/bin/sh
# Imports a root file system from build-rootfs.sh as an OCI image with
# podman, with what a container runtime needs to know: the non-root user,
# the entry point, the data volume and the ports.
#
#   Deploy/image/import.sh ROOTFS.tar NAME[:TAG]
set -eu
podman import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /var/lib/postduif' \
    --change 'ENV POSTDUIF_DATA=/var/lib/postduif' \
    --change 'ENTRYPOINT ["/usr/local/bin/postduif"]' \
    --change 'CMD ["serve"]' \
    --change 'VOLUME /var/lib/postduif' \
    --change 'EXPOSE 9092' --change 'EXPOSE 9093' --change 'EXPOSE 9644' \
    --change 'EXPOSE 8008' --change 'EXPOSE 8448' --change 'EXPOSE 9645' \
    --change 'LABEL org.opencontainers.image.title=Postduif' \
    --change 'LABEL org.opencontainers.image.description=Postduif message broker and chat gateway, from Debian packages' \
    "$1" "$2"
