"""Validates FHIR JSON that Front Door emitted, with an independent model library.

Reads one JSON document from standard input: a resource, or {"resources": [...]}.
Each resource is parsed by the `fhir.resources` R4B (4.3.0) models, the closest the
package ships to R4 (4.0.1); a Bundle is parsed with every entry's resource. The
models check structure, data types, cardinality and required elements, not code
values. Prints "ok <n>" and exits 0, or prints each validation
error and exits 1.
"""

import json
import sys

from fhir.resources.R4B import get_fhir_model_class


def validate(resource):
    cls = get_fhir_model_class(resource["resourceType"])
    cls.model_validate(resource)


def main():
    doc = json.load(sys.stdin)
    resources = doc["resources"] if "resources" in doc else [doc]
    errors = []
    for i, r in enumerate(resources):
        try:
            validate(r)
        except Exception as e:  # the model's own message names each element
            errors.append(f"resource {i} ({r.get('resourceType')}): {e}")
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print(f"ok {len(resources)}")


if __name__ == "__main__":
    main()
