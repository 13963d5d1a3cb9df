"""Metric files: a resumed run rewrites the training log from its checkpoint step."""

from wscrl_jax.tracking import TrainMetricsWriter, read_csv


def test_train_metrics_resume_drops_rows_after_checkpoint_and_partial_line(tmp_path):
    path = tmp_path / "metrics" / "train_metrics.csv"
    path.parent.mkdir()
    # an earlier process logged steps 10-30, checkpointed at 20, and died writing step 40
    path.write_text("step,epoch,member,loss\n10,0,0,1.5\n20,1,0,1.2\n30,2,0,1.0\n4")
    writer = TrainMetricsWriter(str(path), start_step=20)
    writer.write(30, 2, [0.9, 0.8])
    writer.close()
    rows = read_csv(str(path))
    assert [(r["step"], r["member"], r["loss"]) for r in rows] == [
        ("10", "0", "1.5"), ("20", "0", "1.2"), ("30", "0", "0.9"), ("30", "1", "0.8")]


def test_train_metrics_fresh_file_has_header(tmp_path):
    path = tmp_path / "m" / "train_metrics.csv"
    writer = TrainMetricsWriter(str(path))
    writer.write(5, 0, [2.0])
    writer.close()
    assert path.read_text().splitlines() == ["step,epoch,member,loss", "5,0,0,2.0"]
