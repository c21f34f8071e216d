//! OCI image layouts and docker-save archives (filled in below).
