import Foundation
import XCTest
import TestSupport
@testable import Formats

private struct ExportCases: Decodable {
    struct Case: Decodable { let text: String; let ids: [Int] }
    let cases: [Case]
}

/// A tokenizer written as Hugging Face files reads back as the same tokenizer.
final class TokenizerExportTests: XCTestCase {
    private static let smolLM2: Result<(BPETokenizer, String?), Error> = Result {
        let file = try GGUFFile(url: TestPaths.require(TestPaths.smolLM2GGUF))
        return (try BPETokenizer(ggufMetadata: file.metadata, path: file.path), file.metadata["tokenizer.chat_template"]?.string)
    }

    /// A fresh directory, removed after the test unless RQAT_KEEP_TOKENIZER_EXPORT names a
    /// directory to write to instead (for checking the files with transformers by hand).
    private func outputDirectory() throws -> URL {
        if let keep = ProcessInfo.processInfo.environment["RQAT_KEEP_TOKENIZER_EXPORT"], !keep.isEmpty {
            return URL(fileURLWithPath: keep)
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-tokexport-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func testGGUFTokenizerRoundTripsThroughHuggingFaceFiles() throws {
        let (original, _) = try Self.smolLM2.get()
        let dir = try outputDirectory()
        try original.writeHuggingFaceFiles(to: dir, chatTemplate: .smolLM2, modelMaxLength: 8192)
        let reloaded = try BPETokenizer(tokenizerJSON: dir.appendingPathComponent("tokenizer.json"))

        XCTAssertEqual(reloaded.vocabSize, original.vocabSize)
        XCTAssertEqual(reloaded.specialTokens, original.specialTokens)
        XCTAssertEqual(reloaded.preTokenizer, original.preTokenizer)
        XCTAssertEqual(reloaded.addedTokens.map(\.id), original.addedTokens.map(\.id))
        XCTAssertEqual(reloaded.tokens, original.tokens)
        XCTAssertEqual(reloaded.merges.count, original.merges.count)

        let fixture = try TestPaths.loadJSON(ExportCases.self, fixture: "tokenizer-gguf.json")
        XCTAssertGreaterThan(fixture.cases.count, 200)
        var mismatches = 0
        for c in fixture.cases {
            let ids = reloaded.encode(c.text)
            XCTAssertEqual(original.encode(c.text), c.ids)
            if ids != c.ids {
                mismatches += 1
                XCTFail("\(c.text.debugDescription.prefix(80)): got \(ids.prefix(40)), want \(c.ids.prefix(40))")
            }
            XCTAssertEqual(reloaded.decode(c.ids), original.decode(c.ids))
        }
        XCTAssertEqual(mismatches, 0)
    }

    /// Merges come out in rank order, whatever order the hash table holds them in.
    func testMergesAreWrittenInRankOrder() throws {
        let (original, _) = try Self.smolLM2.get()
        let model = try XCTUnwrap(original.tokenizerJSON()["model"] as? [String: Any])
        let merges = try XCTUnwrap(model["merges"] as? [[String]])
        let expected = original.merges.sorted { $0.value.rank < $1.value.rank }.map { original.tokens[$0.value.id] }
        XCTAssertEqual(merges.map { $0.joined() }, expected)
        XCTAssertEqual(merges.first, ["Ġ", "t"])
    }

    func testChatTemplateAndSpecialIdsRoundTrip() throws {
        let (original, ggufJinja) = try Self.smolLM2.get()
        let dir = try outputDirectory()
        try original.writeHuggingFaceFiles(to: dir, chatTemplate: .smolLM2)

        let configData = try Data(contentsOf: dir.appendingPathComponent("tokenizer_config.json"))
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: configData) as? [String: Any])
        XCTAssertEqual(config["bos_token"] as? String, "<|im_start|>")
        XCTAssertEqual(config["eos_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["pad_token"] as? String, "<|im_end|>")
        XCTAssertEqual(config["add_bos_token"] as? Bool, false)
        XCTAssertEqual(config["tokenizer_class"] as? String, "PreTrainedTokenizerFast")
        let jinja = try XCTUnwrap(config["chat_template"] as? String)
        XCTAssertEqual(jinja, ggufJinja, "not SmolLM2's own template")
        let detected = ChatTemplate.detect(chatTemplateJinja: jinja)
        XCTAssertEqual(detected, .smolLM2)
        for messages in [[ChatMessage(role: "user", content: "What is 2+2?")],
                         [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi")]] {
            XCTAssertEqual(detected.render(messages, addGenerationPrompt: true),
                           ChatTemplate.smolLM2.render(messages, addGenerationPrompt: true))
        }

        // A complete checkpoint directory: the ids come back through loadTokenizer.
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: TestPaths.fixture("tiny-qwen3/\(name)"), to: dir.appendingPathComponent(name))
        }
        let (loaded, template) = try Checkpoint.open(dir.path).loadTokenizer()
        XCTAssertEqual(template, .smolLM2)
        XCTAssertEqual(loaded.eosTokenId, original.eosTokenId)
        XCTAssertEqual(loaded.eosTokenId, 2)
        XCTAssertEqual(loaded.bosTokenId, 1)
        XCTAssertEqual(loaded.padTokenId, 2)
    }

    func testPlainChatMLTemplateIsDetectedAsChatML() throws {
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: ChatTemplate.chatML.jinja), .chatML)
        XCTAssertFalse(ChatTemplate.chatML.jinja.contains("system"))
        XCTAssertEqual(ChatTemplate.detect(chatTemplateJinja: ChatTemplate.qwen2_5.jinja), .qwen2_5)
    }

    func testTinyTokenizerJSONRoundTrips() throws {
        struct TinyCases: Decodable {
            struct Case: Decodable { let text: String; let ids: [Int] }
            let cases: [Case]
        }
        let source = TestPaths.fixture("tiny-tokenizer/tokenizer.json")
        let original = try BPETokenizer(tokenizerJSON: source)
        let dir = try outputDirectory()
        try original.writeHuggingFaceFiles(to: dir, chatTemplate: .chatML)
        let reloaded = try BPETokenizer(tokenizerJSON: dir.appendingPathComponent("tokenizer.json"))
        XCTAssertEqual(reloaded.vocabSize, original.vocabSize)
        XCTAssertEqual(reloaded.specialTokens, original.specialTokens)

        // Same merges, in the same order, as the source file.
        let written = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("tokenizer.json"))) as? [String: Any])
        let sourceRoot = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: source)) as? [String: Any])
        XCTAssertEqual((written["model"] as? [String: Any])?["merges"] as? [[String]],
                       (sourceRoot["model"] as? [String: Any])?["merges"] as? [[String]])
        XCTAssertEqual((written["pre_tokenizer"] as? [String: Any])?["type"] as? String, "ByteLevel")

        let fixture = try TestPaths.loadJSON(TinyCases.self, fixture: "tiny-tokenizer/cases.json")
        XCTAssertFalse(fixture.cases.isEmpty)
        for c in fixture.cases {
            XCTAssertEqual(reloaded.encode(c.text), c.ids, c.text.debugDescription)
        }
    }

    /// Every pre-tokenizer kind is written in a shape the reader maps back to the same kind.
    func testEveryPreTokenizerKindRoundTrips() throws {
        let meta: [String: GGUFValue] = [
            "tokenizer.ggml.model": .string("gpt2"),
            "tokenizer.ggml.tokens": .array(["a", "b", "ab", "1", "<s>"].map(GGUFValue.string)),
            "tokenizer.ggml.merges": .array([GGUFValue.string("a b")]),
            "tokenizer.ggml.token_type": .array([1, 1, 1, 1, 3].map { GGUFValue.int32(Int32($0)) }),
        ]
        let base = try BPETokenizer(ggufMetadata: meta, path: "m.gguf")
        XCTAssertEqual(base.specialTokens, ["<s>": 4])
        for kind in [PreTokenizer.gpt2(individualDigits: false), .gpt2(individualDigits: true), .qwen2, .llama3, .whole] {
            var json = base.tokenizerJSON()
            json["pre_tokenizer"] = BPETokenizer.preTokenizerJSON(kind, addPrefixSpace: false)
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-tokexport-\(UUID().uuidString).json")
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            addTeardownBlock { try? FileManager.default.removeItem(at: url) }
            let reloaded = try BPETokenizer(tokenizerJSON: url)
            XCTAssertEqual(reloaded.preTokenizer, kind)
            XCTAssertEqual(reloaded.specialTokens, ["<s>": 4])
            XCTAssertEqual(reloaded.encode("ab<s>1 ab"), base.encode("ab<s>1 ab"), "\(kind)")
        }
    }
}
