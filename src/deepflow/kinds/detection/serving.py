"""Serving part of the ``detection`` kind: an uploaded image in, boxes and counts per class out.

``POST /v1/<name>/predict`` takes a multipart upload (field ``image``, JPEG or PNG) and answers
the detections scoring at least the version's threshold, in the image's pixels, with the count
per class. Checks run in this order: size (413), decodable (400), then availability (503), so a
client learns about its own errors even while no version is loaded.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, File, HTTPException, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from deepflow import fastpath
from deepflow.explaining import EXPLAIN
from deepflow.serving import ERRORS, Loaded, ModelRef, ModelStore, Problem, ServeConfig

DEFAULT_THRESHOLD = 0.25
MULTIPART_MARGIN = 64 * 1024  # form boundaries and headers around the image bytes


class Detection(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float
    class_: str = Field(alias="class")
    score: float
    objectness: float | None = Field(None, description="with ?explain=true: how sure the model is that the box "
                                                       "holds an object of any class")
    class_scores: dict[str, float] | None = Field(None, description="with ?explain=true: the box's score under "
                                                                   "every class (objectness x class probability)")

    model_config = ConfigDict(populate_by_name=True)


class DetectionResponse(BaseModel):
    model: ModelRef
    threshold: float
    width: int
    height: int
    detections: list[Detection]
    counts: dict[str, int]


def prepare(name: str, scorer: Any) -> None:
    """Nothing to build per version: a detector takes encoded bytes and answers a boxes frame."""
    return None


def runtime(prepared: Any) -> dict[str, Any]:
    return {"runtime": "the scorer, concurrent requests grouped (micro-batching)"}


def body_limit(cfg: ServeConfig) -> int:
    return cfg.max_image_bytes + MULTIPART_MARGIN


def image_size(data: bytes, filename: str | None = None) -> tuple[int, int]:
    """(width, height) of encoded image bytes; 400 naming the upload and saying why when they do not
    fully decode (``labels.decode``: not an image, truncated, a corrupt PNG, too many pixels)."""
    import warnings

    from PIL import Image

    from deepflow.kinds.detection.labels import ImageError, decode

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = decode(data)
    except ImageError as exc:  # all are the client's
        named = f" {filename[:100]!r}" if filename else ""
        raise HTTPException(400, f"image{named}: {exc}") from exc
    return image.size


def add_routes(app: FastAPI, store: ModelStore, cfg: ServeConfig, name: str) -> None:
    """``POST /v1/<name>/predict``: detect objects in one uploaded image with the served version."""

    def detect(served: Loaded, images: list[bytes]) -> list[Any]:
        """One detector call for the images of several requests -> each image's detections frame."""
        import pandas as pd

        found = served.scorer.predict(pd.DataFrame({"image": images}))
        if "image" not in found:  # a scorer that does not say which image a box is from: one at a time
            return [served.scorer.predict(pd.DataFrame({"image": [one]})) for one in images]
        return [found[found["image"] == i] for i in range(len(images))]

    batcher = fastpath.batcher(cfg.max_batch, name, detect)  # concurrent requests share one forward

    def explained(served: Loaded, data: bytes) -> Any:
        import pandas as pd

        if "explain" not in inspect.signature(served.scorer.predict).parameters:
            raise HTTPException(409, f"{name} v{served.version}: its scorer ({type(served.scorer).__name__}) cannot "
                                     "report per-class scores; serve a DetectorScorer version")
        return served.scorer.predict(pd.DataFrame({"image": [data]}), explain=True)

    async def predict(image: Annotated[UploadFile, File(description="a JPEG or PNG image")], explain: bool = EXPLAIN,
                      ) -> Any:
        data = await image.read(cfg.max_image_bytes + 1)  # the client's errors first, then availability
        if len(data) > cfg.max_image_bytes:
            raise HTTPException(413, f"image over the {cfg.max_image_bytes}-byte limit")
        width, height = await run_in_threadpool(image_size, data, image.filename)
        served = store.serving(name)
        if explain:
            found = await run_in_threadpool(explained, served, data)
        else:
            (found,) = await batcher.submit([(served, data)])
        found = found[found["score"] >= served.threshold]
        detections = [{"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class": str(c), "score": s}
                      for x1, y1, x2, y2, c, s in zip(found["x1"].tolist(), found["y1"].tolist(),
                                                      found["x2"].tolist(), found["y2"].tolist(), found["class"],
                                                      found["score"].tolist(), strict=True)]
        if explain:  # the boxes are the explanation: add how sure each is, and of which class
            for d, objectness, scores in zip(detections, found["objectness"], found["class_scores"], strict=True):
                d["objectness"], d["class_scores"] = float(objectness), scores
        counts: dict[str, int] = {}
        for d in detections:
            counts[d["class"]] = counts.get(d["class"], 0) + 1
        out = {"model": served.ref, "threshold": served.threshold, "width": width, "height": height,
               "detections": detections, "counts": counts}
        if explain:  # checked and written by the response model
            return out
        return Response(orjson.dumps(out), media_type="application/json")

    app.post(f"/v1/{name}/predict", tags=["predict"], responses={**ERRORS, 400: {"model": Problem}},
             response_model=DetectionResponse,
             response_model_exclude_unset=True,  # no explanation fields unless asked for
             summary=f"Detect objects in an image ({name})", response_model_by_alias=True)(predict)
