import Eval
import Formats
import Foundation
import Model
import TestSupport
import XCTest

final class PerplexityTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let input_ids: [[Int]]
            let logits: [[[Float]]]
        }
        let qwen2: Case
    }

    /// Perplexity uses position t to predict token t+1, as transformers' labels=input_ids: the
    /// tiny Qwen2's perplexity equals the one computed from transformers' logits.
    func testPerplexityMatchesReferenceLogits() throws {
        let checkpoint = try Checkpoint.open(TestPaths.fixture("tiny-qwen2").path)
        let model = Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
        let ref = try TestPaths.loadJSON(Reference.self, fixture: "tiny-logits.json").qwen2
        var nll = 0.0, n = 0
        for (ids, logits) in zip(ref.input_ids, ref.logits) {
            for t in 0..<(ids.count - 1) {
                let row = logits[t].map(Double.init)
                let m = row.max()!
                let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
                nll += lse - row[ids[t + 1]]
                n += 1
            }
        }
        let result = model.perplexity(of: ref.input_ids)
        XCTAssertEqual(result.predictedTokens, n)
        XCTAssertEqual(result.perplexity, exp(nll / Double(n)), accuracy: 1e-3 * exp(nll / Double(n)))
    }
}
