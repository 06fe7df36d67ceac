"""Re-identification: "who is this face?" answered against the realized clusters, live.

The service (``fvc reid``) reads the workers' downstream topic from its beginning, keeps its own
view of the realized clusters (``app.downstream.view.ClusterView``, replay-safe through event
versions) and its own FAISS index of their representatives, and then follows the topic. It answers
over HTTP (``POST /identify``) and, in streaming mode, matches every record of the camera topics and
writes one match record per input to an output topic.

It never touches Redis: the downstream topic is the consumers' contract, so a re-identification
service can run anywhere the topic can be read, as many replicas as the query load needs.

Modules: ``state`` (view + index + search), ``follow`` (the topic reader), ``request`` (checking
an identify request), ``http`` (the endpoints), ``stream`` (streaming mode), ``service`` (wiring
and life cycle).
"""
