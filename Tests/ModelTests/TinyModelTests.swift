import XCTest
import Formats
import Model
import Tensors
import TestSupport

/// Logits of random-weight Qwen3 (fp32, untied, explicit head_dim) and Qwen2 (bf16 weights,
/// biases, tied embeddings) checkpoints against transformers (scripts/make-reference.py).
final class TinyModelTests: XCTestCase {
    struct Reference: Decodable {
        struct Case: Decodable {
            let input_ids: [[Int]]
            let logits: [[[Float]]]
            let greedy_ids: [Int]
        }
        let qwen3: Case
        let qwen2: Case
    }

    static let reference: Reference? = try? TestPaths.loadJSON(Reference.self, fixture: "tiny-logits.json")

    func decoder(_ name: String) throws -> Decoder {
        let checkpoint = try Checkpoint.open(TestPaths.fixture(name).path)
        return Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
    }

    func reference() throws -> Reference {
        try XCTUnwrap(Self.reference, "Tests/Fixtures/tiny-logits.json missing: run scripts/make-reference.py")
    }

    /// ||a - b|| / ||b|| over all logits of a sequence.
    func relativeError(_ a: Tensor, _ b: [[Float]]) -> Double {
        var diff = 0.0, norm = 0.0
        for (t, row) in b.enumerated() {
            for (j, r) in row.enumerated() {
                let d = Double(a[t, j]) - Double(r)
                diff += d * d
                norm += Double(r) * Double(r)
            }
        }
        return (diff / norm).squareRoot()
    }

    func checkLogits(_ name: String, _ ref: Reference.Case) throws {
        let model = try decoder(name)
        for (ids, logits) in zip(ref.input_ids, ref.logits) {
            let cache = model.makeCache(capacities: [ids.count])
            let ours = model.forward([SequenceChunk(sequence: 0, tokens: ids)], cache: cache, allLogits: true)
            XCTAssertEqual(ours.shape, [ids.count, model.config.vocabSize])
            let err = relativeError(ours, logits)
            XCTAssertLessThan(err, 1e-4, "\(name): logits differ from transformers by \(err) relative")
        }
    }

    func testQwen3LogitsMatchTransformers() throws { try checkLogits("tiny-qwen3", try reference().qwen3) }
    func testQwen2LogitsMatchTransformers() throws { try checkLogits("tiny-qwen2", try reference().qwen2) }

    func testGreedyGenerationMatchesTransformers() throws {
        for (name, ref) in [("tiny-qwen3", try reference().qwen3), ("tiny-qwen2", try reference().qwen2)] {
            let generator = Generator(decoder: try decoder(name), stopTokens: [])
            let out = generator.generate([GenerationRequest(prompt: ref.input_ids[0], maxNewTokens: ref.greedy_ids.count)])
            XCTAssertEqual(out[0].tokens, ref.greedy_ids, name)
            XCTAssertEqual(out[0].finish, .length)
        }
    }

    /// With fewer slots than requests, waiting prompts take the place of finished sequences
    /// (continuous batching): never more than `maxBatch` run at once, and every sequence is the
    /// one it is when all run together (greedy; logprobs to rounding).
    func testContinuousBatchingKeepsEachSequence() throws {
        let model = try decoder("tiny-qwen3")
        let ref = try reference().qwen3
        let requests = (0..<5).map { i in
            GenerationRequest(prompt: Array(ref.input_ids[i % ref.input_ids.count].prefix(3 + i)), maxNewTokens: 4 + 3 * i)
        }
        let together = Generator(decoder: model, stopTokens: []).generate(requests)
        var running = 0, most = 0, started = Set<Int>(), finished: [Int] = []
        let slotted = Generator(decoder: model, stopTokens: []).generate(requests, maxBatch: 2, onToken: { r, _ in
            if started.insert(r).inserted { running += 1; most = max(most, running) }
        }, onFinish: { r, _ in running -= 1; finished.append(r) })
        XCTAssertEqual(most, 2)
        XCTAssertEqual(Set(finished), Set(0..<5))
        for (a, b) in zip(together, slotted) {
            XCTAssertEqual(a.tokens, b.tokens)
            XCTAssertEqual(a.finish, b.finish)
            for (x, y) in zip(a.logprobs, b.logprobs) { XCTAssertEqual(x, y, accuracy: 1e-4) }
        }
    }

    /// Prompts that share a long prefix (prefilled once, each cache starting as its copy) give
    /// the sequences each prompt gives on its own (greedy; logprobs to rounding), also when
    /// waiting prompts join later (continuous batching).
    func testSharedPromptPrefixKeepsEachSequence() throws {
        let model = try decoder("tiny-qwen3")
        let v = model.config.vocabSize
        let common = (0..<20).map { ($0 * 7 + 3) % v }
        let requests = (0..<4).map { i in
            GenerationRequest(prompt: common + (0...i).map { ($0 * 11 + 5 * i + 1) % v }, maxNewTokens: 6 + i)
        }
        XCTAssertEqual(Generator.sharedPrefix(requests.map(\.prompt)), 20)
        let alone = requests.map { Generator(decoder: model, stopTokens: []).generate([$0])[0] }
        for maxBatch in [4, 2] {
            let shared = Generator(decoder: model, stopTokens: []).generate(requests, maxBatch: maxBatch)
            for (a, b) in zip(alone, shared) {
                XCTAssertEqual(a.tokens, b.tokens, "maxBatch \(maxBatch)")
                for (x, y) in zip(a.logprobs, b.logprobs) { XCTAssertEqual(x, y, accuracy: 1e-4) }
            }
        }
    }

    func testSharedPrefixLeavesEachPromptATokenOfItsOwn() {
        XCTAssertEqual(Generator.sharedPrefix([[1, 2, 3, 4], [1, 2, 3, 5]]), 3)
        XCTAssertEqual(Generator.sharedPrefix([[1, 2, 3], [1, 2, 3]]), 2)
        XCTAssertEqual(Generator.sharedPrefix([[1, 2], [1, 2, 3, 4]]), 1)
        XCTAssertEqual(Generator.sharedPrefix([[7, 2], [1, 2]]), 0)
    }

    /// Prefill then one token at a time through the cache gives the logits of one full pass;
    /// two sequences of different lengths in one call give the logits of separate calls.
    func testCacheAndBatchingAgreeWithFullForward() throws {
        let model = try decoder("tiny-qwen3")
        let ref = try reference().qwen3
        let a = ref.input_ids[0], b = ref.input_ids[1]
        let full = model.forward([SequenceChunk(sequence: 0, tokens: a)], cache: model.makeCache(capacities: [a.count]),
                                 allLogits: true)

        let cache = model.makeCache(capacities: [a.count, b.count])
        var stepLogits = model.forward([SequenceChunk(sequence: 0, tokens: Array(a.prefix(5))),
                                        SequenceChunk(sequence: 1, tokens: b)], cache: cache)
        let separateB = model.forward([SequenceChunk(sequence: 0, tokens: b)], cache: model.makeCache(capacities: [b.count]))
        for j in 0..<model.config.vocabSize {
            XCTAssertEqual(stepLogits[0, j], full[4, j], accuracy: 1e-4)
            XCTAssertEqual(stepLogits[1, j], separateB[0, j], accuracy: 1e-4)
        }
        for t in 5..<a.count {
            stepLogits = model.forward([SequenceChunk(sequence: 0, tokens: [a[t]])], cache: cache)
            for j in 0..<model.config.vocabSize { XCTAssertEqual(stepLogits[0, j], full[t, j], accuracy: 1e-4) }
        }
        XCTAssertEqual(cache.length, [a.count, b.count])
    }
}

extension TinyModelTests {
    /// Embedding then every block through `runLayer` (one-layer caches, as PTQ calibration
    /// does) reproduces the full forward's final hidden state, and an input hook on every
    /// linear layer sees its input once per layer.
    func testLayerByLayerMatchesForward() throws {
        let model = try decoder("tiny-qwen3")
        let ref = try reference().qwen3
        let (x, layout) = model.embed(ref.input_ids)
        var seen: [LinearSite: Int] = [:]
        for layer in model.weights.layers {
            for site in LinearSite.allCases {
                layer.linear(site).inputHooks.append { _, rows in
                    XCTAssertEqual(rows, x.shape[0])
                    seen[site, default: 0] += 1
                }
            }
        }
        for l in 0..<model.config.numHiddenLayers {
            let cache = model.makeCache(capacities: ref.input_ids.map(\.count), layers: 1)
            model.runLayer(l, x: x, rows: x.shape[0], layout: layout, cache: cache, cacheLayer: 0)
        }
        XCTAssertEqual(seen, [.qkv: 2, .output: 2, .gateUp: 2, .down: 2])
        // Final norm + LM head on the last row of sequence 0, compared with the fixture logits.
        let c = model.config.hiddenSize, last = ref.input_ids[0].count - 1
        var normed = [Float](repeating: 0, count: c)
        let w = model.weights.finalNorm
        var ss: Float = 0
        for i in 0..<c { ss += x[last, i] * x[last, i] }
        let r = 1 / (ss / Float(c) + model.config.rmsNormEps).squareRoot()
        for i in 0..<c { normed[i] = x[last, i] * r * w.ptr[i] }
        for j in 0..<model.config.vocabSize {
            var logit: Float = 0
            for i in 0..<c { logit += normed[i] * model.weights.lmHead.weight.dense[j, i] }
            XCTAssertEqual(logit, ref.logits[0][last][j], accuracy: 1e-3)
        }
    }
}
