"""Django's Redis cache backend, with one redis-py client per connection pool.

The stock backend builds a new `redis.Redis` for every cache call; with redis-py 8 that
constructor copies its table of ~170 response callbacks each time, which cost more CPU than
the round trip itself on /predict (the client throttle reads and writes the cache on every
request). A `redis.Redis` is safe to share between threads (each command takes a connection
from the pool), so each process keeps one per pool."""
from __future__ import annotations

import threading

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SharedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}
        self._clients_lock = threading.Lock()

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            with self._clients_lock:
                client = self._clients.get(index)
                if client is None:
                    if index not in self._pools:
                        self._pools[index] = self._pool_class.from_url(self._servers[index], **self._pool_options)
                    client = self._clients[index] = self._client(connection_pool=self._pools[index])
        return client


class SharedClientRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient

    def redis_client(self):
        """The redis-py client for writes, for what the cache API cannot say in one round
        trip (gateway.throttling's budget script)."""
        return self._cache.get_client(write=True)

    def value_from_redis(self, raw: bytes):
        """A value as this cache stores it in Redis, read back (the cache's own serializer)."""
        return self._cache._serializer.loads(raw)
