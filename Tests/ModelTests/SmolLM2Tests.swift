import XCTest
import Formats
import Model
import Tensors
import TestSupport

/// The real SmolLM2-135M-Instruct GGUF against transformers loading the same file
/// (scripts/make-reference.py writes Tests/Fixtures/smollm2-gguf-reference.json).
final class SmolLM2Tests: XCTestCase {
    struct Reference: Decodable {
        struct Message: Decodable { let role: String; let content: String }
        struct Prompt: Decodable {
            let name: String
            let chat: Bool
            let text: String
            let messages: [Message]?
            let input_ids: [Int]
            let last_logits: [Float]
            let logits_range: Float
            let greedy_ids: [Int]
            let greedy_top2_gap: [Float]
        }
        let prompts: [Prompt]
    }

    /// Loaded once for the whole class: dequantising 135M weights is the slow part.
    nonisolated(unsafe) static var shared: LanguageModel?

    func model() throws -> LanguageModel {
        try TestPaths.require(TestPaths.smolLM2GGUF)
        if let m = Self.shared { return m }
        let m = try LanguageModel(path: TestPaths.smolLM2GGUF.path)
        Self.shared = m
        return m
    }

    func reference() throws -> Reference {
        try TestPaths.loadJSON(Reference.self, fixture: "smollm2-gguf-reference.json")
    }

    func testConfigFromGGUF() throws {
        let c = try model().config
        XCTAssertEqual(c.modelType, .llama)
        XCTAssertEqual(c.numHiddenLayers, 30)
        XCTAssertEqual(c.hiddenSize, 576)
        XCTAssertEqual(c.numAttentionHeads, 9)
        XCTAssertEqual(c.numKeyValueHeads, 3)
        XCTAssertEqual(c.vocabSize, 49152)
        XCTAssertTrue(c.tieWordEmbeddings)
    }

    /// Last-position logits within 1e-3 of the logits' range, for two chat and two plain prompts.
    func testLastLogitsMatchTransformers() throws {
        let lm = try model()
        for p in try reference().prompts {
            let cache = lm.decoder.makeCache(capacities: [p.input_ids.count])
            let logits = lm.decoder.forward([SequenceChunk(sequence: 0, tokens: p.input_ids)], cache: cache)
            var maxDiff: Float = 0
            for j in 0..<p.last_logits.count { maxDiff = max(maxDiff, abs(logits[0, j] - p.last_logits[j])) }
            XCTAssertLessThan(maxDiff, 1e-3 * p.logits_range, "\(p.name): max |diff| \(maxDiff), range \(p.logits_range)")
        }
    }

    /// Greedy 48 tokens equal transformers' token for token; a divergence is accepted only where
    /// transformers' own top-2 gap was below 1e-3 (a near tie that fp32 summation order decides).
    func testGreedyGenerationMatchesTransformers() throws {
        let lm = try model()
        let prompts = try reference().prompts
        let generator = Generator(decoder: lm.decoder, stopTokens: [2])
        let results = generator.generate(prompts.map { GenerationRequest(prompt: $0.input_ids, maxNewTokens: 48) })
        for (p, r) in zip(prompts, results) {
            let common = min(r.tokens.count, p.greedy_ids.count)
            guard let first = (0..<common).first(where: { r.tokens[$0] != p.greedy_ids[$0] }) else {
                XCTAssertEqual(r.tokens, p.greedy_ids, p.name)
                continue
            }
            let gap = p.greedy_top2_gap[first]
            print("\(p.name): first divergence at step \(first), transformers' top-2 gap \(gap)")
            XCTAssertLessThan(gap, 1e-3, "\(p.name): diverged at step \(first) where the top-2 gap was \(gap)")
        }
    }

    /// Tokenizer and chat template produce exactly the ids transformers fed the model.
    func testPromptEncodingMatchesTransformers() throws {
        let lm = try model()
        for p in try reference().prompts {
            if let messages = p.messages {
                let rendered = lm.chatTemplate.render(messages.map { ChatMessage(role: $0.role, content: $0.content) },
                                                      addGenerationPrompt: true)
                XCTAssertEqual(rendered, p.text, p.name)
            }
            XCTAssertEqual(lm.tokenizer.encode(p.text), p.input_ids, p.name)
        }
    }
}
