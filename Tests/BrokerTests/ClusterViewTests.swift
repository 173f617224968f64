import Testing

@testable import Broker

/// A broker that wrote a change to etcd for a client waits for its own view
/// to show it before answering, so the client's next request sees it.
/// The bounds are generous: the suite runs beside tests that keep the
/// cooperative threads busy for seconds, so a wake-up can come late.
@Suite struct ClusterViewTests {
    @Test(.timeLimit(.minutes(2))) func reachingARevisionWaitsForTheWatchToApplyIt() async {
        let view = ClusterView()
        view.update { $0.revision = 10 }
        #expect(await view.reach(10, within: .milliseconds(1)))
        let applied = Task {
            try await Task.sleep(for: .milliseconds(50))
            view.update { $0.revision = 12 }
        }
        let started = ContinuousClock.now
        #expect(await view.reach(12, within: .seconds(60)))
        #expect(ContinuousClock.now - started >= .milliseconds(40))
        #expect(view.snapshot.revision == 12)
        _ = await applied.result
    }

    @Test(.timeLimit(.minutes(2))) func aViewThatNeverReachesTheRevisionGivesUpAtTheBound() async {
        let view = ClusterView()
        view.update { $0.revision = 3 }
        let started = ContinuousClock.now
        #expect(await view.reach(4, within: .milliseconds(100)) == false)
        #expect(ContinuousClock.now - started >= .milliseconds(100))
    }
}
