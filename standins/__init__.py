"""Local HTTP stand-ins of the services the worker talks to: Expo push, Google OAuth + Calendar,
and Supabase's Data API (PostgREST).

They live beside the worker, not in it: the tests, the benchmarks and the demo need them, the
production image does not (it copies ``worker/`` and ``sql/`` only). Each speaks its service's real
wire format on 127.0.0.1, so the worker's real client libraries are exercised, not a mock of them.
Import the one you need (``standins.expo``, ``standins.google``, ``standins.postgrest``): the
PostgREST stand-in needs psycopg, the others only the standard library.
"""
