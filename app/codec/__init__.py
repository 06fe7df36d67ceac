"""Wire codecs: camera records in, cluster events out (JSON or msgpack)."""
