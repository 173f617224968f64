import Core
import Testing

@Suite struct RecencyCacheTests {
    @Test func aFullCacheForgetsTheLeastRecentlyUsedNotEverything() {
        var cache = RecencyCache<Int, String>(countMax: 8)
        for key in 0..<4 { cache.set("v\(key)", for: key) }  // the fourth turns the generation
        #expect(cache.get(0) == "v0")  // used: moves to the newer generation
        for key in 4..<8 { cache.set("v\(key)", for: key) }
        // 0 was used since the turn before last and survives; 1-3 were not.
        #expect(cache.get(0) == "v0")
        #expect(cache.get(1) == nil && cache.get(2) == nil && cache.get(3) == nil)
        #expect(cache.get(7) == "v7")
        #expect(cache.count < 8)
    }

    @Test func theBoundHoldsWhateverIsInserted() {
        var cache = RecencyCache<Int, Int>(countMax: 100)
        for key in 0..<10_000 {
            cache.set(key, for: key)
            #expect(cache.count < 100)
        }
        #expect(cache.get(9_999) == 9_999)
    }

    @Test func setReplacesAndRemoveForgets() {
        var cache = RecencyCache<String, Int>(countMax: 10)
        cache.set(1, for: "a")
        cache.set(2, for: "a")
        #expect(cache.get("a") == 2 && cache.count == 1)
        cache.remove("a")
        #expect(cache.get("a") == nil && cache.count == 0)
    }
}
