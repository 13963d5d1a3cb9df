"""Grain input pipelines over the TFDS `causalcircuit` data sources.

Training (`PairStream`): each member reads its own shuffled order of the training split,
seeded from its data seed (reshuffled every epoch: Grain's `shuffle` draws a new permutation
for each pass), JPEGs decoded in Grain worker processes (`mp_prefetch`), a producer thread
assembling the steps' batches ahead of the loop, and batches handed to the loop per compiled
call as host arrays the loop puts on the devices. An epoch reads every pair once; its last
batch is padded with zero-weight rows (the reference's `drop_last=False`). Members with the
same data seed share one iterator. `state()` is the Grain iterator state of every data seed
after the last batch the loop took: the checkpoint stores it, and `PairStream(...,
restore=state)` continues with the same batches.

Evaluation (`iterate_split`): a split in its download order (by the stored `index`), in
batches, decoded in worker processes.
"""

import queue
import threading
from typing import Dict, Iterator, List, Optional, Sequence

import grain
from absl import flags
import numpy as np

from wscrl_jax.data.causalcircuit.files import decode_jpeg

PAIR_FIELDS = ("x1", "x2", "z1", "z2", "e1", "e2", "intervention_labels",
               "intervention_masks", "index")


def decode_pair(record: dict) -> Dict[str, np.ndarray]:
    """A TFDS record -> x1, x2 uint8 [R, R, 3] (before / after), z1, z2, e1, e2 float32 [4],
    intervention_labels int64 [], intervention_masks bool [4], index int64 [] (the pair's
    position in the download's split)."""
    where = f"pair {int(record['index'])}"
    x1, x2 = (decode_jpeg(bytes(record["imgs"][k]), None, f"{where} image {k}")
              for k in range(2))
    z, e = np.asarray(record["original_latents"]), np.asarray(record["epsilon"])
    return {"x1": x1, "x2": x2, "z1": z[0], "z2": z[1], "e1": e[0], "e2": e[1],
            "intervention_labels": np.int64(record["intervention_labels"]),
            "intervention_masks": np.asarray(record["intervention_masks"], bool),
            "index": np.int64(record["index"])}


def _dataset(source, workers: int, shuffle_seed: Optional[int] = None):
    """Grain dataset of decoded pairs: shuffled per epoch and repeated without end when
    `shuffle_seed` is given, else one pass in the source's order; decoded in `workers`
    processes (0: in this process)."""
    ds = grain.MapDataset.source(source)
    if shuffle_seed is not None:
        ds = ds.seed(shuffle_seed).shuffle().repeat(None)
    ds = ds.map(decode_pair).to_iter_dataset()
    if workers > 0:
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; ours are parsed apart
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return ds


class PairStream:
    """Training batches of every member: `take(num)` -> (batch, weights, rows) with batch
    {x1, x2: uint8 [members, num, B, R, R, 3]}, weights float32 [members, num, B] (0 on padding
    rows) and rows int32 [members, num, B] (positions in the member's epoch order).

    source: the training split's data source; data_seeds: per member (padding members too);
    start_step: the loop's step the first `take` begins at (an epoch has
    ceil(N / batch_size) steps); restore: a `state()` saved at that step.
    """

    def __init__(self, source, data_seeds: Sequence[int], batch_size: int, workers: int = 0,
                 start_step: int = 0, restore: Optional[Dict[str, dict]] = None,
                 lookahead: int = 64):
        self.num_samples = len(source)
        self.batch_size = batch_size
        self.steps_per_epoch = -(-self.num_samples // batch_size)
        self.data_seeds = [int(s) for s in data_seeds]
        self._iterators = {}
        for seed in dict.fromkeys(self.data_seeds):
            it = iter(_dataset(source, workers, shuffle_seed=seed))
            if restore is not None:
                it.set_state(restore[str(seed)])
            elif start_step:
                raise ValueError("a stream that starts after step 0 needs the saved state")
            self._iterators[seed] = it
        self._state = {str(s): it.get_state() for s, it in self._iterators.items()}
        self._queue = queue.Queue(maxsize=lookahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(start_step,), daemon=True)

    def _produce(self, step: int):
        """Producer thread: one entry per step, (per-seed batches, weights, rows, states)."""
        try:
            while not self._stop.is_set():
                pos = (step % self.steps_per_epoch) * self.batch_size
                count = min(self.batch_size, self.num_samples - pos)
                per_seed, states = {}, {}
                for seed, it in self._iterators.items():
                    rows = [next(it) for _ in range(count)]
                    rows += rows[-1:] * (self.batch_size - count)  # padding, weight 0
                    per_seed[seed] = {k: np.stack([r[k] for r in rows]) for k in ("x1", "x2")}
                    states[str(seed)] = it.get_state()
                weights = (np.arange(self.batch_size) < count).astype(np.float32)
                rows = (pos + np.arange(self.batch_size)).astype(np.int32)
                self._put((per_seed, weights, rows, states))
                step += 1
        except BaseException as e:  # surfaced by `take` in the loop's thread
            self._put(e)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def take(self, num: int):
        """The next `num` steps' batches of every member (host arrays; see the class)."""
        if self._thread.ident is None:
            self._thread.start()  # on the first take: a stream made and not used reads nothing
        steps = []
        for _ in range(num):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            steps.append(item)
        self._state = steps[-1][3]
        batch = {k: np.stack([np.stack([s[0][seed][k] for s in steps])
                              for seed in self.data_seeds]) for k in ("x1", "x2")}
        weights = np.broadcast_to(np.stack([s[1] for s in steps]),
                                  (len(self.data_seeds), num, self.batch_size))
        rows = np.broadcast_to(np.stack([s[2] for s in steps]),
                               (len(self.data_seeds), num, self.batch_size))
        return batch, np.ascontiguousarray(weights), np.ascontiguousarray(rows)

    def state(self) -> Dict[str, dict]:
        """Grain iterator state per data seed after the last batch taken (JSON-serialisable)."""
        return self._state

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def iterate_split(source, batch_size: int, workers: int = 0) -> Iterator[Dict[str, np.ndarray]]:
    """Batches {field: [b, ...]} of a split in the source's stored order (b <= batch_size, the
    last smaller); `index` gives each pair's position in the download."""
    batch: List[dict] = []
    for record in _dataset(source, workers):
        batch.append(record)
        if len(batch) == batch_size:
            yield _stack(batch)
            batch = []
    if batch:
        yield _stack(batch)


def _stack(records: List[dict]) -> Dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in records]) for k in PAIR_FIELDS}
