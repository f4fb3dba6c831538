import Foundation
import XCTest
import TestSupport
@testable import Formats

/// tokenizer-gguf.json: transformers' tokenizer built from the SmolLM2 GGUF, on the GSM-Symbolic
/// questions and answers and hand-written edge cases.
private struct GGUFTokenizerFixture: Decodable {
    struct Case: Decodable { let text: String; let ids: [Int] }
    struct PreTokenizerSection: Decodable { let type: String; let use_regex: Bool? }
    let cases: [Case]
    let special_tokens: [String: Int]
    let pre_tokenizer: PreTokenizerSection
    let add_special_tokens_default_adds: [Int]
}

/// tiny-tokenizer/cases.json: a small GPT-2 style tokenizer.json trained on GSM text.
private struct TinyTokenizerCases: Decodable {
    struct Case: Decodable { let text: String; let ids: [Int]; let decoded: String }
    let cases: [Case]
}

/// smollm2-gguf-reference.json: prompts as transformers tokenised them for the model run.
private struct ReferencePrompts: Decodable {
    struct Prompt: Decodable { let name: String; let text: String; let input_ids: [Int]; let greedy_ids: [Int] }
    let prompts: [Prompt]
}

final class TokenizerTests: XCTestCase {
    /// The SmolLM2 GGUF is read once for all tests (parsing 49k tokens and merges takes a moment).
    private static let smolLM2: Result<BPETokenizer, Error> = Result {
        let file = try GGUFFile(url: TestPaths.require(TestPaths.smolLM2GGUF))
        return try BPETokenizer(ggufMetadata: file.metadata, path: file.path)
    }

    private func smolLM2() throws -> BPETokenizer { try Self.smolLM2.get() }

    // MARK: - GGUF tokenizer against transformers

    func testGGUFTokenizerMatchesTransformersOnEveryCase() throws {
        let tokenizer = try smolLM2()
        let fixture = try TestPaths.loadJSON(GGUFTokenizerFixture.self, fixture: "tokenizer-gguf.json")
        // What the engine assumes about transformers' choices: GPT-2's regex, no BOS.
        XCTAssertEqual(fixture.pre_tokenizer.type, "ByteLevel")
        XCTAssertEqual(fixture.pre_tokenizer.use_regex, true)
        XCTAssertEqual(fixture.add_special_tokens_default_adds, [])
        XCTAssertGreaterThan(fixture.cases.count, 200)

        var mismatches = 0
        for c in fixture.cases {
            let ids = tokenizer.encode(c.text)
            if ids != c.ids {
                mismatches += 1
                XCTFail("\(c.text.debugDescription.prefix(80)): got \(ids.prefix(40)), want \(c.ids.prefix(40))")
            }
        }
        XCTAssertEqual(mismatches, 0)
    }

    func testGGUFSpecialTokensAndIds() throws {
        let tokenizer = try smolLM2()
        let fixture = try TestPaths.loadJSON(GGUFTokenizerFixture.self, fixture: "tokenizer-gguf.json")
        XCTAssertEqual(tokenizer.specialTokens, fixture.special_tokens)
        XCTAssertEqual(tokenizer.vocabSize, 49152)
        XCTAssertEqual(tokenizer.bosTokenId, 1)
        XCTAssertEqual(tokenizer.eosTokenId, 2)
        XCTAssertEqual(tokenizer.padTokenId, 2)
        XCTAssertEqual(tokenizer.id(of: "<|im_end|>"), 2)
        XCTAssertEqual(tokenizer.token(of: 1), "<|im_start|>")
        XCTAssertEqual(tokenizer.token(of: 216), "Ġ")
        XCTAssertNil(tokenizer.token(of: 49152))
        XCTAssertNil(tokenizer.id(of: "no such token"))
    }

    func testGGUFDecodeRoundTripsEveryCase() throws {
        let tokenizer = try smolLM2()
        let fixture = try TestPaths.loadJSON(GGUFTokenizerFixture.self, fixture: "tokenizer-gguf.json")
        for c in fixture.cases {
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(c.text)), c.text)
        }
    }

    func testDecodeSkipsSpecialTokensOnRequest() throws {
        let tokenizer = try smolLM2()
        let ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")
        XCTAssertEqual(ids.first, 1)
        XCTAssertEqual(tokenizer.decode(ids), "<|im_start|>user\nhi<|im_end|>\n")
        XCTAssertEqual(tokenizer.decode(ids, skipSpecial: true), "user\nhi\n")
    }

    /// The prompts of the model reference run tokenise as they did there, and its greedy
    /// continuations decode to text that re-encodes to the same ids.
    func testReferencePromptsTokeniseAsInTheModelRun() throws {
        let tokenizer = try smolLM2()
        let reference = try TestPaths.loadJSON(ReferencePrompts.self, fixture: "smollm2-gguf-reference.json")
        for prompt in reference.prompts {
            XCTAssertEqual(tokenizer.encode(prompt.text), prompt.input_ids, prompt.name)
        }
    }

    /// Canonically equivalent pieces (equal as Swift Strings) are different bytes and tokens.
    func testEquivalentTextKeepsItsOwnBytes() throws {
        let tokenizer = try smolLM2()
        for text in ["\u{C5}", "\u{212B}", "\u{8C48}", "\u{F900}", "\u{D55C}", "\u{1112}\u{1161}\u{11AB}"] {
            XCTAssertEqual(Array(tokenizer.decode(tokenizer.encode(text)).unicodeScalars), Array(text.unicodeScalars))
        }
    }

    /// The per-piece cache changes no ids: every GSM question and answer encodes the same from an
    /// empty cache, from a cache filled by the same texts, and from a cache filled by other texts.
    /// (Encoding speed is not a unit test's business; it used to be timed here.)
    func testCacheChangesNoIds() throws {
        let file = try GGUFFile(url: TestPaths.require(TestPaths.smolLM2GGUF))
        let texts = try TestPaths.loadJSON(GGUFTokenizerFixture.self, fixture: "tokenizer-gguf.json").cases.map(\.text)
        let fresh = try BPETokenizer(ggufMetadata: file.metadata, path: file.path)
        let cold = texts.map { fresh.encode($0) }
        XCTAssertGreaterThan(cold.reduce(0) { $0 + $1.count }, 10_000)
        XCTAssertEqual(texts.map { fresh.encode($0) }, cold)
        let reversed = try BPETokenizer(ggufMetadata: file.metadata, path: file.path)
        XCTAssertEqual(texts.reversed().map { reversed.encode($0) }, cold.reversed())
    }

    // MARK: - Streaming

    func testStreamingDecoderHoldsBackSplitCharacters() throws {
        let tokenizer = try smolLM2()
        let text = "Tea 🍵 costs ¥500 in 東京タワー, 你好 👍🏽 naïve"
        let ids = tokenizer.encode(text)
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(stream.push(id)) }
        pieces.append(stream.finish())
        XCTAssertEqual(pieces.joined(), text)
        XCTAssertEqual(pieces.joined(), tokenizer.decode(ids))
        // Some token ended mid-character (else the test proves nothing), and no piece shows a
        // replacement character for a half-arrived one.
        XCTAssertTrue(pieces.dropLast().contains(""), "no token split a character")
        XCTAssertFalse(pieces.joined().contains("\u{FFFD}"))
    }

    func testStreamingDecoderFlushesAnUnfinishedCharacter() throws {
        let tokenizer = try smolLM2()
        let ids = tokenizer.encode("ok 🙂")
        var stream = StreamingDecoder(tokenizer: tokenizer)
        let shown = ids.dropLast().map { stream.push($0) }.joined()
        XCTAssertEqual(shown + stream.finish(), tokenizer.decode(Array(ids.dropLast())))
    }

    // MARK: - tokenizer.json

    func testTokenizerJSONMatchesCases() throws {
        let tokenizer = try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
        let fixture = try TestPaths.loadJSON(TinyTokenizerCases.self, fixture: "tiny-tokenizer/cases.json")
        XCTAssertFalse(fixture.cases.isEmpty)
        for c in fixture.cases {
            let ids = tokenizer.encode(c.text)
            XCTAssertEqual(ids, c.ids, c.text.debugDescription)
            XCTAssertEqual(tokenizer.decode(c.ids), c.decoded, c.text.debugDescription)
        }
        XCTAssertEqual(tokenizer.specialTokens, ["<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2])
        XCTAssertNil(tokenizer.eosTokenId)
    }

    /// Merges may be written as "a b" strings or [a, b] pairs; both load to the same tokenizer.
    func testTokenizerJSONMergesInEitherSpelling() throws {
        let url = TestPaths.fixture("tiny-tokenizer/tokenizer.json")
        var root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var model = try XCTUnwrap(root["model"] as? [String: Any])
        let pairs = try XCTUnwrap(model["merges"] as? [[String]])
        model["merges"] = pairs.map { $0.joined(separator: " ") }
        root["model"] = model
        let copy = try temporaryFile(JSONSerialization.data(withJSONObject: root))
        let text = "The answer is 3.14159 or 1,234,567."
        XCTAssertEqual(try BPETokenizer(tokenizerJSON: copy).encode(text),
                       try BPETokenizer(tokenizerJSON: url).encode(text))
    }

    func testTokenizerJSONWithUnknownPreTokenizerIsRejected() throws {
        let json = """
        {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
         "pre_tokenizer": {"type": "Metaspace"}, "decoder": {"type": "ByteLevel"}}
        """
        let url = try temporaryFile(Data(json.utf8))
        XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: url)) { error in
            XCTAssertTrue("\(error)".contains("pre_tokenizer"), "\(error)")
        }
    }

    // MARK: - GGUF metadata errors

    private func tinyGGUFMetadata(model: String = "gpt2", tokens: [String] = ["a", "b", "ab"],
                                  merges: [String] = ["a b"], pre: String? = "gpt-2") -> [String: GGUFValue] {
        var meta: [String: GGUFValue] = [
            "tokenizer.ggml.model": .string(model),
            "tokenizer.ggml.tokens": .array(tokens.map(GGUFValue.string)),
            "tokenizer.ggml.merges": .array(merges.map(GGUFValue.string)),
        ]
        if let pre { meta["tokenizer.ggml.pre"] = .string(pre) }
        return meta
    }

    func testSentencePieceGGUFIsRejectedByName() {
        XCTAssertThrowsError(try BPETokenizer(ggufMetadata: tinyGGUFMetadata(model: "llama"), path: "m.gguf")) { error in
            let e = error as? FormatError
            XCTAssertEqual(e?.path, "m.gguf")
            XCTAssertTrue(e?.problem.contains("\"llama\" (SentencePiece)") ?? false, "\(error)")
        }
    }

    func testGGUFWithoutTokensOrMergesIsRejected() {
        for meta in [tinyGGUFMetadata(tokens: []), tinyGGUFMetadata(merges: [])] {
            XCTAssertThrowsError(try BPETokenizer(ggufMetadata: meta, path: "m.gguf")) { error in
                let problem = (error as? FormatError)?.problem ?? ""
                XCTAssertTrue(problem.hasPrefix("no tokenizer: "), problem)
                XCTAssertFalse(problem.contains("\n"))
            }
        }
        var none = tinyGGUFMetadata()
        none["tokenizer.ggml.model"] = nil
        XCTAssertThrowsError(try BPETokenizer(ggufMetadata: none, path: "m.gguf"))
    }

    func testGGUFWithUnknownPreTokenizerListsTheKnownOnes() {
        XCTAssertThrowsError(try BPETokenizer(ggufMetadata: tinyGGUFMetadata(pre: "deepseek-llm"), path: "m.gguf")) { error in
            let problem = (error as? FormatError)?.problem ?? ""
            XCTAssertTrue(problem.contains("deepseek-llm") && problem.contains("qwen2") && problem.contains("smollm"), problem)
        }
    }

    func testGGUFMergeOutsideTheVocabularyIsRejected() {
        XCTAssertThrowsError(try BPETokenizer(ggufMetadata: tinyGGUFMetadata(merges: ["a c"]), path: "m.gguf")) { error in
            XCTAssertTrue("\(error)".contains("\"a c\""), "\(error)")
        }
    }

    /// Merges apply lowest rank first, whatever their position in the word.
    func testMergesApplyByRank() throws {
        // "abc": "b c" outranks "a b", so the result is a + bc, never ab + c.
        let meta = tinyGGUFMetadata(tokens: ["a", "b", "c", "ab", "bc", "abc"], merges: ["b c", "a b", "a bc"])
        let tokenizer = try BPETokenizer(ggufMetadata: meta, path: "m.gguf")
        XCTAssertEqual(tokenizer.encode("abc"), [5])
        XCTAssertEqual(tokenizer.encode("abab"), [3, 3])
        XCTAssertEqual(tokenizer.encode("cab"), [2, 3])
    }

    // MARK: - Pre-tokenizer

    /// Expected pieces from Hugging Face tokenizers 0.23.3 (ByteLevel, Digits and Split
    /// pre-tokenizers with these regexes), spot-checking every alternative of each pattern.
    func testPreTokenizerPiecesMatchHuggingFace() {
        let gpt2 = PreTokenizer.gpt2(individualDigits: false), digits = PreTokenizer.gpt2(individualDigits: true)
        let cases: [(PreTokenizer, String, [String])] = [
            (gpt2, "  leading and trailing   ", [" ", " leading", " and", " trailing", "   "]),
            (gpt2, "a  b\n\n\tc   ", ["a", " ", " b", "\n\n", "\t", "c", "   "]),
            (gpt2, "don't I'll WE'RE they've 'sam ''s", ["don", "'t", " I", "'ll", " WE", "'", "RE", " they", "'ve", " '", "sam", " ''", "s"]),
            (gpt2, "1234567 and 3.14, -42 ½²³ ٣٤", ["1234567", " and", " 3", ".", "14", ",", " -", "42", " ½²³", " ٣٤"]),
            (gpt2, "tabs\tand\r\nwindows\n\n  newlines\n ", ["tabs", "\t", "and", "\r", "\n", "windows", "\n\n ", " newlines", "\n "]),
            (gpt2, "!!!Hello ...world?!\n\nNext", ["!!!", "Hello", " ...", "world", "?!", "\n", "\n", "Next"]),
            (gpt2, "\tHello \u{A0}word\u{3000}x", ["\t", "Hello", " ", "\u{A0}", "word", "\u{3000}", "x"]),
            (gpt2, "a\u{2028}b \u{85}c \u{1C}d", ["a", "\u{2028}", "b", " ", "\u{85}", "c", " \u{1C}", "d"]),
            (gpt2, "Café 東京 🙂👍🏽 e\u{301}", ["Café", " 東京", " 🙂👍🏽", " e", "\u{301}"]),
            (digits, "12 345 ½x", ["1", "2", " ", "3", "4", "5", " ", "½", "x"]),
            (digits, "a  1", ["a", "  ", "1"]),
            (.qwen2, "don't I'll WE'RE A'S B'Ll", ["don", "'t", " I", "'ll", " WE", "'RE", " A", "'S", " B", "'Ll"]),
            // Oniguruma's (?i) folds the long s onto "s"; the "st" ligature is no "t".
            (.qwen2, "x'ſam x'ﬅop", ["x", "'ſ", "am", " x", "'ﬅop"]),
            (.qwen2, "1234567 and 3.14", ["1", "2", "3", "4", "5", "6", "7", " and", " ", "3", ".", "1", "4"]),
            (.qwen2, "tabs\tand\r\nwindows\n\n  newlines\n ", ["tabs", "\tand", "\r\n", "windows", "\n\n", " ", " newlines", "\n", " "]),
            (.qwen2, "!!!Hello ...world?!\n\nNext", ["!!!", "Hello", " ...", "world", "?!\n\n", "Next"]),
            (.qwen2, "\tHello \u{A0}word\u{3000}x", ["\tHello", " ", "\u{A0}word", "\u{3000}x"]),
            (.llama3, "1234567 ½²³ 12 345 6789", ["123", "456", "7", " ", "½²³", " ", "12", " ", "345", " ", "678", "9"]),
        ]
        for (kind, text, expected) in cases {
            let scalars = Array(text.unicodeScalars)
            let pieces = kind.split(scalars).map { String(String.UnicodeScalarView(scalars[$0])) }
            XCTAssertEqual(pieces, expected, "\(kind) \(text.debugDescription)")
        }
    }

    // MARK: - Helpers

    private func temporaryFile(_ data: Data) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-tokenizer-\(UUID().uuidString).json")
        try data.write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}
