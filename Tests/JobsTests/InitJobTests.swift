import Formats
import Model
import Tensors
import TestSupport
import XCTest
@testable import Jobs

final class InitJobTests: XCTestCase {
    private func writeTokenizer() throws -> URL {
        let dir = try makeScratchDirectory("init-tokenizer")
        let texts = (0..<50).map { "Ann has \($0) apples. Ann gets 3 more. How many apples does Ann have now?\n" }
        try BPETrainer(maxMerges: 64).train(texts).write(to: dir)
        return dir.appendingPathComponent("tokenizer.json")
    }

    func testALlamaInitLoadsWithTheRequestedShapesAndTheTokenizer() throws {
        let out = try makeScratchDirectory("init").appendingPathComponent("model")
        var job = InitJob(family: .llama, hiddenSize: 128, layers: 2)
        job.intermediateSize = 384
        job.heads = 4
        job.kvHeads = 2
        job.seed = 11
        let summary = try job.run(tokenizerURL: try writeTokenizer(), out: out)

        let checkpoint = try Checkpoint.open(out.path)
        let c = checkpoint.config
        XCTAssertEqual(c, summary.config)
        XCTAssertEqual([c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads, c.headDim],
                       [128, 384, 2, 4, 2, 32])
        XCTAssertTrue(c.tieWordEmbeddings)
        let (tokenizer, _) = try checkpoint.loadTokenizer()
        XCTAssertEqual(c.vocabSize, tokenizer.vocabSize)
        XCTAssertEqual(c.eosTokenId, tokenizer.eosTokenId)
        XCTAssertEqual(tokenizer.token(of: tokenizer.padTokenId ?? -1), "<|pad|>")

        let q = try checkpoint.weights.tensor(DecoderArchitecture.name(.q, layer: 1))
        XCTAssertEqual(q.shape, [128, 128])
        let qValues = Self.values(q)
        XCTAssertEqual(try checkpoint.weights.tensor(DecoderArchitecture.name(.k, layer: 0)).shape, [64, 128])
        XCTAssertEqual(try checkpoint.weights.tensor(DecoderArchitecture.name(.gate, layer: 0)).shape, [384, 128])
        XCTAssertEqual(Self.std(q), 0.02, accuracy: 0.001)
        XCTAssertEqual(Self.std(try checkpoint.weights.tensor(DecoderArchitecture.name(.down, layer: 0))), 0.01, accuracy: 0.0007)
        let norm = try checkpoint.weights.tensor(DecoderArchitecture.name(.inputNorm, layer: 0))
        XCTAssertTrue(Self.values(norm).allSatisfy { $0 == 1 })

        // It runs: the inference decoder generates tokens of the vocabulary.
        let lm = try LanguageModel(checkpoint: checkpoint)
        let result = Generator(decoder: lm.decoder, stopTokens: []).generate(
            [GenerationRequest(prompt: tokenizer.encode("Ann has 5 apples."), maxNewTokens: 4,
                               sampling: SamplingParams(temperature: 0, topP: 1, topK: 0, seed: 0))])[0]
        XCTAssertEqual(result.tokens.count, 4)
        XCTAssertTrue(result.tokens.allSatisfy { (0..<c.vocabSize).contains($0) })

        // The same seed writes the same weights; another seed others.
        let again = try makeScratchDirectory("init-again").appendingPathComponent("model")
        _ = try job.run(tokenizerURL: try writeTokenizer(), out: again)
        XCTAssertTrue(Self.values(try Checkpoint.open(again.path).weights.tensor(DecoderArchitecture.name(.q, layer: 1))) == qValues)
    }

    func testAQwen3InitHasQKNormsAndAnExplicitHeadSize() throws {
        let out = try makeScratchDirectory("init-qwen3").appendingPathComponent("model")
        var job = InitJob(family: .qwen3, hiddenSize: 192, layers: 1)
        job.heads = 4
        job.headDim = 64
        job.intermediateSize = 512
        _ = try job.run(tokenizerURL: try writeTokenizer(), out: out)
        let checkpoint = try Checkpoint.open(out.path)
        XCTAssertEqual(checkpoint.config.headDim, 64)
        XCTAssertEqual(try checkpoint.weights.tensor(DecoderArchitecture.name(.q, layer: 0)).shape, [256, 192])
        XCTAssertEqual(try checkpoint.weights.tensor(DecoderArchitecture.name(.qNorm, layer: 0)).shape, [64])
    }

    func testSizesWithoutAHadamardTransformAreRefusedNamingTheOption() throws {
        XCTAssertTrue([128, 192, 320, 448, 576, 640, 1536].allSatisfy(InitJob.hasHadamard))
        XCTAssertTrue(InitJob.hasHadamard(144), "144 = 4 x 36")
        XCTAssertFalse([100, 168, 200, 300, 9].contains(where: InitJob.hasHadamard))
        var job = InitJob(family: .llama, hiddenSize: 128, layers: 1)
        job.intermediateSize = 300
        let out = try makeScratchDirectory("init-bad").appendingPathComponent("model")
        XCTAssertThrowsError(try job.run(tokenizerURL: try writeTokenizer(), out: out)) {
            XCTAssertTrue("\($0)".hasPrefix("--intermediate 300 has no Hadamard"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing half-written")
    }

    /// A copy of the tensor's values (its pointer is only valid while the tensor is alive).
    private static func values(_ t: Tensor) -> [Float] { withExtendedLifetime(t) { Array(t.buffer) } }

    private static func std(_ t: Tensor) -> Float {
        let v = values(t)
        let mean = v.reduce(0, +) / Float(v.count)
        return (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(v.count)).squareRoot()
    }
}
