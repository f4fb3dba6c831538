import XCTest
import Model

final class SamplerTests: XCTestCase {
    let logits: [Float] = [1.0, 3.0, 2.0, 3.0, -1.0]

    func testGreedyPicksFirstMaximum() {
        var s = Sampler(.greedy)
        let (token, logprob) = s.sample(logits, count: logits.count)
        XCTAssertEqual(token, 1)
        let lse = log(logits.map { exp(Double($0)) }.reduce(0, +))
        XCTAssertEqual(Double(logprob), 3.0 - lse, accuracy: 1e-5)
    }

    func testSameSeedSameDraws() {
        var a = Sampler(SamplingParams(temperature: 1, seed: 7))
        var b = Sampler(SamplingParams(temperature: 1, seed: 7))
        var c = Sampler(SamplingParams(temperature: 1, seed: 8))
        let da = (0..<50).map { _ in a.sample(logits, count: 5).token }
        let db = (0..<50).map { _ in b.sample(logits, count: 5).token }
        let dc = (0..<50).map { _ in c.sample(logits, count: 5).token }
        XCTAssertEqual(da, db)
        XCTAssertNotEqual(da, dc)
    }

    /// Frequencies follow softmax(logits / T) restricted to the nucleus.
    func testTemperatureAndTopPFrequencies() {
        let t: Float = 0.7
        let p = logits.map { exp(Double($0 / t)) }
        let z = p.reduce(0, +)
        let probs = p.map { $0 / z }   // ~ [0.025, 0.436, 0.104, 0.436, 0.0014]
        // top-p 0.9: tokens 1 and 3 (0.871) are not enough, token 2 joins; 0 and 4 are cut.
        var s = Sampler(SamplingParams(temperature: t, topP: 0.9, seed: 1))
        var counts = [Int](repeating: 0, count: 5)
        let n = 40_000
        for _ in 0..<n { counts[s.sample(logits, count: 5).token] += 1 }
        XCTAssertEqual(counts[0], 0)
        XCTAssertEqual(counts[4], 0)
        let kept = probs[1] + probs[2] + probs[3]
        for i in [1, 2, 3] {
            XCTAssertEqual(Double(counts[i]) / Double(n), probs[i] / kept, accuracy: 0.01, "token \(i)")
        }
    }

    func testTopKOneIsGreedy() {
        var s = Sampler(SamplingParams(temperature: 1.5, topK: 1, seed: 3))
        for _ in 0..<20 { XCTAssertEqual(s.sample(logits, count: 5).token, 1) }
    }
}

extension SamplerTests {
    /// A nucleus already reached by the top two tokens excludes the third.
    func testTopPStopsAtNucleus() {
        var s = Sampler(SamplingParams(temperature: 0.7, topP: 0.85, seed: 2))
        let drawn = Set((0..<2_000).map { _ in s.sample(logits, count: 5).token })
        XCTAssertEqual(drawn, [1, 3])
    }
}
