"""The original prototype's consumer, as it reads: confluent-kafka's AvroDeserializer built with
the latest registered schema of the topic's value subject as its reader schema, the decoded dict
transformed and written with json.dump, one object per line. Any error is printed as the
prototype printed it ("An error occurred: ...") and the record is skipped.

Reads until --expect records were written or --timeout seconds passed, then prints a summary
as JSON on stdout: {"written": N, "errors": [...]}.
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    subject = f"{args.topic}-value"
    schema_str = registry.get_latest_version(subject).schema.schema_str
    deserializer = AvroDeserializer(registry, schema_str)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            # As the original consumer's group of five: tansu needs the long session timeout.
            "session.timeout.ms": 45000,
        }
    )
    consumer.subscribe([args.topic])
    written, errors = 0, []
    deadline = time.monotonic() + args.timeout
    with open(args.out, "a", encoding="utf-8") as log:
        while written < args.expect and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                errors.append(f"consumer error: {msg.error()}")
                continue
            try:
                value = deserializer(
                    msg.value(), SerializationContext(msg.topic(), MessageField.VALUE)
                )
                # The prototype's transform: category upper-cased, 20 % off for Cat_5.
                if value.get("category") is not None:
                    original = value["category"]
                    value["category"] = original.upper()
                    if original == "Cat_5":
                        value["discount_price"] = round(value["price"] * 0.8, 2)
                json.dump(value, log)
                log.write("\n")
                log.flush()
                written += 1
            except Exception as e:  # the prototype's handling: print, skip the record
                print(f"An error occurred: {e}", file=sys.stderr)
                errors.append(str(e))
    consumer.close()
    print(json.dumps({"written": written, "errors": errors}))


if __name__ == "__main__":
    main()
