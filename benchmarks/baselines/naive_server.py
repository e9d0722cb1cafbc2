"""The naive baseline: how most tutorials serve YOLO, kept only to be measured against.

One process, one model, a synchronous FastAPI endpoint: read the body, decode with
OpenCV, ``model.predict``, return JSON. No batching, no auth, no quotas.

    .venv/bin/python benchmarks/baselines/naive_server.py --port 8801 --imgsz 640
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import serve_app.constants  # noqa: E402,F401  (YOLO_OFFLINE before ultralytics)


def make_app(imgsz: int):  # type: ignore[no-untyped-def]
    import cv2
    import numpy as np
    from fastapi import Body, FastAPI, HTTPException

    from serve_app.models.loader import build_yolo
    from serve_app.models.store import fetch_version

    fetched = fetch_version("file://models/demo/shapes/1")
    model = build_yolo(fetched.manifest, fetched.weights)
    app = FastAPI()

    @app.post("/predict")
    def predict(body: bytes = Body(..., media_type="application/octet-stream")) -> dict:  # type: ignore[type-arg]
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise HTTPException(status_code=400, detail="not an image")
        result = model.predict(image, imgsz=imgsz, verbose=False)[0]
        boxes = result.boxes
        return {
            "detections": [
                {"class_id": int(c), "confidence": float(s), "bbox": [float(v) for v in b]}
                for b, s, c in zip(
                    boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
                )
            ]
        }

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()
    uvicorn.run(make_app(args.imgsz), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
