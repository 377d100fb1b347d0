"""K-MERL Edge fleets: patches over MQTT into gateway shards, on one machine or a Ray cluster.

This package joins the runtime (``kmerl_edge``) and the firmware bridge's decoder (``firmware_bridge``), so
neither has to import the other. paho-mqtt and Ray are the ``fleet`` extra, imported when used. The topic
scheme, message schemas, QoS, sharding and the capacity model are in ``docs/fleet.md``.
"""

from ._errors import FleetConfigError, FleetError
from ._shard import SCHEMA_EVENT, SCHEMA_RESULT, FleetShard, ShardConfig, shard_of

__all__ = ["FleetShard", "ShardConfig", "shard_of", "SCHEMA_RESULT", "SCHEMA_EVENT", "FleetError",
           "FleetConfigError"]
