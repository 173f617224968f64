/// Yields until `condition` holds, a bounded number of times: the task or
/// actor under test runs on the cooperative pool, so yielding lets it reach
/// its wait without sleeping for a guessed time. Returns whether it held.
public func eventually(_ condition: () async -> Bool) async -> Bool {
    for _ in 0..<100_000 {
        if await condition() { return true }
        await Task.yield()
    }
    return await condition()
}
