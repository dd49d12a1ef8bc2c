"""Sample requests with tfllm's clients (TF Serving or `tfllm serve`).

    python serving/request.py [--host localhost] [--rest-port 8501] [--grpc-port 8500]

A server started with a token (`TFLLM_AUTH_TOKEN=... tfllm serve`) gets it
from the same environment variable, or from --auth-token.
"""

import argparse
import json
import os

from tfllm.serving import GrpcClient, RestClient, ServingError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=8500)
    parser.add_argument("--auth-token", default=os.environ.get("TFLLM_AUTH_TOKEN"))
    args = parser.parse_args()

    reviews = ["A warm, funny and moving film.", "Dull and far too long."]
    token = args.auth_token or None
    for client in (RestClient(args.host, args.rest_port, auth_token=token),
                   GrpcClient(args.host, args.grpc_port, auth_token=token)):
        print(f"--- {type(client).__name__}")
        try:
            print(json.dumps(client.status("reviews")))
            print(json.dumps(client.predict("reviews", instances=reviews)))
            print(json.dumps(client.predict("reviews", {"text": reviews}, label="stable")))
        except ServingError as e:  # e.g. [401] without the server's token, [404] before reviews is exported
            print(f"reviews: {e}")
        try:
            # "greedy" takes the prompt and the length; serving_default also every decoding option
            # (temperature, top_k, top_p, seed), one value per prompt, as serving/requests.sh sends them.
            print(json.dumps(client.predict(
                "shakespeare", instances=[{"prompt": "ROMEO:", "max_new_tokens": 32}], signature_name="greedy")))
        except ServingError as e:  # e.g. no generator named shakespeare exported yet
            print(f"shakespeare: {e}")


if __name__ == "__main__":
    main()
