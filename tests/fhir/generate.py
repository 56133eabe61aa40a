"""Synthetic FHIR R4 / US Core bundles for Front Door's tests, from independent tools.

The patients, practitioners, encounters, labs (glucose by LOINC) and medication
orders come from `carebundle` (a synthetic US Core 6.1.0 / R4 generator); the
appointment and its location, which carebundle does not make, are built and
validated with the `fhir.resources` models. Nothing here writes FHIR JSON by hand.

    generate.py diabetic --seed 42                    a type 2 diabetic's visit (transaction)
    generate.py malformed --seed 42                   the same, every `status` dropped by
                                                      carebundle's defect injector
    generate.py appointment --seed 7 --phone ... --start ... --end ... --department ...
                --location ... --reason ... --id ...  a patient (with a mobile number), a
                                                      practitioner and a booked appointment
    generate.py mrn-system                            the identifier system carebundle
                                                      gives its patients' MRNs

Prints the JSON on standard output.
"""

import argparse
import json
import sys

from carebundle import generate_bundle, inject_defects, to_json
from carebundle.imperfection.defects import Imperfection
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.location import Location


def carebundle_json(profile, seed):
    return json.loads(to_json(generate_bundle(profile=profile, seed=seed, sex="F")))


def entry(bundle, resource_type):
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def appointment(args):
    bundle = carebundle_json("healthy", args.seed)
    patient = entry(bundle, "Patient")
    practitioner = entry(bundle, "Practitioner")
    mobile = ContactPoint(system="phone", value=args.phone, use="mobile")
    patient["resource"]["telecom"] = [mobile.model_dump(mode="json", exclude_none=True)]
    location_urn = "urn:uuid:" + "5" * 8 + "-5555-4555-8555-" + f"{args.seed:012d}"
    location = Location(name=args.location, status="active")
    appt = Appointment(
        id=args.id,
        status="booked",
        start=args.start,
        end=args.end,
        specialty=[{"text": args.department}],
        reasonCode=[{"text": args.reason}],
        participant=[
            {"actor": {"reference": patient["fullUrl"]}, "status": "accepted"},
            {"actor": {"reference": practitioner["fullUrl"]}, "status": "accepted"},
            {"actor": {"reference": location_urn}, "status": "accepted"},
        ],
    )
    for urn, resource in ((location_urn, location), (None, appt)):
        bundle["entry"].append({
            "fullUrl": urn or ("urn:uuid:" + "a" * 8 + "-aaaa-4aaa-8aaa-" + f"{args.seed:012d}"),
            "resource": json.loads(resource.model_dump_json(exclude_none=True)),
            "request": {"method": "PUT" if resource is appt else "POST",
                        "url": f"Appointment/{args.id}" if resource is appt else "Location"},
        })
    return bundle


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["diabetic", "malformed", "appointment", "mrn-system"])
    p.add_argument("--seed", type=int, default=42)
    for a in ("phone", "start", "end", "department", "location", "reason", "id"):
        p.add_argument(f"--{a}")
    args = p.parse_args()
    if args.kind == "mrn-system":
        b = carebundle_json("type2_diabetes", args.seed)
        print(entry(b, "Patient")["resource"]["identifier"][0]["system"])
        return
    if args.kind == "diabetic":
        out = carebundle_json("type2_diabetes", args.seed)
    elif args.kind == "malformed":
        clean = carebundle_json("type2_diabetes", args.seed)
        out, defects = inject_defects(
            clean, Imperfection(missing_field=1.0, droppable_fields=("status",)), seed=args.seed
        )
        if not defects:
            sys.exit("no defect was injected")
    else:
        out = appointment(args)
    if args.kind != "malformed":
        # What the tests feed Front Door is valid FHIR by an independent library.
        Bundle.model_validate(out)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
