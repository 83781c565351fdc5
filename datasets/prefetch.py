"""Files read, sampled and normalised in a background thread, a few ahead of the encoder."""
import queue
import threading
from pathlib import Path
from typing import List

import torch

from clip2point.datasets.readers import load_cloud
from clip2point.utils.errors import DataError


class CloudReader:
    """Reads, samples and normalises the input files in a background thread, in input order, a
    few batches ahead of the encoder. Iterating gives (path, cloud tensor) or (path, error line)."""

    def __init__(self, files: List[Path], num_points: int, seed: int, fps_device: str, ahead: int):
        self.files, self.num_points, self.seed, self.fps_device = files, num_points, seed, fps_device
        self.queue: "queue.Queue" = queue.Queue(maxsize=max(2, ahead))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read_all, name="cloud-reader", daemon=True)
        self.thread.start()

    def _read_all(self) -> None:
        for path in self.files:
            if self.stop.is_set():
                return
            try:
                item = torch.from_numpy(load_cloud(path, self.num_points, seed=self.seed, fps_device=self.fps_device))
            except DataError as err:
                item = f"{err}"
            except MemoryError:
                item = f"{path}: out of memory while reading it with --num_points {self.num_points}"
            except BaseException as err:  # a bug: raised again in the main thread
                item = err
            while not self.stop.is_set():
                try:
                    self.queue.put((path, item), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self):
        for _ in self.files:
            path, item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield path, item

    def close(self) -> None:
        self.stop.set()
