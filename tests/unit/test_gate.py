import asyncio

from krl.rollout.gate import VersionGate


async def test_a_swap_waits_for_running_batches_and_holds_new_ones() -> None:
    gate = VersionGate()
    events: list[str] = []
    release = asyncio.Event()

    async def batch(name: str) -> None:
        async with gate.batch():
            events.append(f"{name} start")
            await release.wait()
            events.append(f"{name} end")

    async def swap() -> None:
        async with gate.swap():
            events.append("swap")

    b1 = asyncio.create_task(batch("b1"))
    await asyncio.sleep(0.01)
    s = asyncio.create_task(swap())
    await asyncio.sleep(0.01)
    b2 = asyncio.create_task(batch("b2"))  # arrives after the swap asked: waits for it
    await asyncio.sleep(0.01)
    assert events == ["b1 start"]
    release.set()
    await asyncio.gather(b1, s, b2)
    assert events == ["b1 start", "b1 end", "swap", "b2 start", "b2 end"]
