"""Turns a SAM template into the CloudFormation template AWS creates (`sam validate` does the
same transform): prints it as JSON, for the preflight rules to read what Lambda, SQS and IAM
will see at create time (functions, event source mappings, API stages...).

    python transform.py TEMPLATE > OUT.json

Local `CodeUri`s become placeholder S3 locations, as `sam validate` does: the code is not
what the rules check.
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The translator asks for AWS managed policies only for SAM's policy shortcuts
    (`Policies: [AmazonS3ReadOnlyAccess]`); templates with their own roles need none."""

    def load(self):
        return {}


def main(path):
    with open(path, encoding="utf-8") as file:
        template = yaml_parse(file.read())
    for name, resource in (template.get("Resources") or {}).items():
        props = resource.get("Properties") or {}
        uri = props.get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(uri, str):
            if not uri.startswith("s3://"):
                props["CodeUri"] = f"s3://preflight/{name}.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    json.dump(transform(template, {}, NoManagedPolicies()), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: transform.py TEMPLATE")
    main(sys.argv[1])
