"""The original prototype's producer, as it writes: each product row serialized by
confluent-kafka's AvroSerializer with the prototype's value schema (auto-registered under the
topic's value subject), keyed by the product id as text.

Reads the products from a CSV file with the seed file's columns (id,name,category,price,
last_updated), as the prototype read them from its table.
Prints {"produced": N} on stdout once every record was acknowledged.
"""

import argparse
import csv
import json

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True, help="the prototype's .avsc")
    parser.add_argument("--products", required=True, help="CSV: id,name,category,price,last_updated")
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    with open(args.schema, encoding="utf-8") as f:
        serializer = AvroSerializer(registry, f.read())
    producer = Producer({"bootstrap.servers": args.bootstrap})
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    produced = 0
    with open(args.products, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            value = {
                "id": int(row["id"]),
                "name": row["name"],
                "category": row["category"] or None,
                "price": float(row["price"]),
                "last_updated": row["last_updated"],
            }
            producer.produce(
                args.topic,
                key=str(value["id"]),
                value=serializer(value, SerializationContext(args.topic, MessageField.VALUE)),
                on_delivery=delivered,
            )
            produced += 1
    producer.flush(60)
    if failures:
        raise SystemExit(f"delivery failed: {failures}")
    print(json.dumps({"produced": produced}))


if __name__ == "__main__":
    main()
