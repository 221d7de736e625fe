"""The profile's bookkeeping: which component a sampled stack is, and CPU time shared out by samples."""

from __future__ import annotations

from simulations.profile_round import component, read_collapsed, table

ACTOR = 'process 11:"ray::ClientAppActor.run"'
SERVER = 'process 12:"/venv/bin/python /venv/bin/flwr-simulation --runtime-api-address x"'


def test_the_innermost_named_frame_decides_and_outer_markers_come_first():
    pickle_under_state = [
        "step (cbp_fed/client_app.py:280)",
        "CMASearch.to_bytes (cbp_fed/search.py:210)",
        "dumps (pickle.py:1)",
    ]
    assert component(pickle_under_state) == "user state (de)serialising"
    pickle_under_ray = [
        "_remote (ray/actor.py:5)",
        "_serialize (ray/_private/serialization.py:9)",
        "dumps (pickle.py:1)",
    ]
    assert component(pickle_under_ray) == "Ray (de)serialising message + context"
    sweep = ["add_messages_to_queue (flwr/server/superlink/fleet/vce/vce_api.py:177)", "now (flwr/supercore/date.py:3)"]
    assert component(sweep) == "Flower delivery sweep (LinkState, every node)"
    metered = ["MessageRecord.of (cbp_fed/comm.py:84)", "deflate (flwr/app/message/array.py:2)"]
    assert component(metered) == "metering"
    assert component(["main (numpy/core.py:1)"]) == "other"


def test_cpu_time_is_shared_out_by_samples_within_each_process(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        f"{ACTOR};tell (cbp_fed/search.py:120) 30\n"
        f"{ACTOR};from_bytes (cbp_fed/search.py:215);CMASearch.from_bytes (cbp_fed/search.py:215) 10\n"
        f"{SERVER};BlackBox.score (cbp_fed/service.py:231);forward (torch/nn/modules/module.py:1) 5\n"
        f"{SERVER};Event.wait (threading.py:629) 5\n"
    )
    result = table(
        read_collapsed(raw),
        {"ClientApp actors (Ray workers)": 80.0, "ServerApp + simulation": 40.0, "Ray raylet + GCS (C++)": 7.0},
    )
    assert result["components"]["CMA-ES ask/tell"] == 60.0  # 30 of the actors' 40 samples x 80 ms
    assert result["components"]["user state (de)serialising"] == 20.0
    assert result["components"]["BlackBox forward (provider)"] == 20.0
    assert result["components"]["native (Ray core, waits)"] == 20.0  # a blocked thread's samples keep their share
    assert result["components"]["Ray raylet + GCS (C++)"] == 7.0  # a process without Python stacks keeps its own line
    assert sum(result["components"].values()) == 127.0
