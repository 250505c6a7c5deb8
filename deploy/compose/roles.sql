-- The runtime role the compose replicas connect as (SPEC §10): it may log in and nothing else
-- until `aex migrate`, run as the owner `aex`, grants it what the server needs.
-- Not for production: the password is public.
CREATE ROLE aex_runtime LOGIN PASSWORD 'aex_runtime';
