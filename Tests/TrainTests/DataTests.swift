import Foundation
import XCTest
import Formats
import Tensors
import TestSupport
@testable import Train

final class DataTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-data-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    private func jsonl(_ text: String) throws -> URL {
        let url = scratch.appendingPathComponent("data.jsonl")
        try Data(text.utf8).write(to: url)
        return url
    }

    /// The small GPT-2 style tokenizer with <|endoftext|> = 0, <|im_start|> = 1, <|im_end|> = 2.
    private func tokenizer() throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
    }

    private func expectError(_ body: @autoclosure () throws -> Any, contains parts: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("no error", file: file, line: line)
        } catch {
            let text = "\(error)"
            XCTAssertFalse(text.contains("\n"), "not one line: \(text)", file: file, line: line)
            for part in parts { XCTAssertTrue(text.contains(part), "\"\(part)\" not in: \(text)", file: file, line: line) }
        }
    }

    // MARK: Tokenisation

    func testChatExampleTokensAndMask() throws {
        let tok = try tokenizer()
        let url = try jsonl(#"{"prompt": "What is 3 plus 4?", "completion": "3 + 4 = 7.", "id": 9}"# + "\n")
        let data = try SFTDataset.load(url, tokenizer: tok, format: .chat, template: .smolLM2, seqLen: 200)
        XCTAssertEqual(data.examples.count, 1)
        let ex = data.examples[0]
        let promptText = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
        let prompt = tok.encode(promptText), completion = tok.encode("3 + 4 = 7.")
        XCTAssertEqual(ex.tokens, prompt + completion + [2])  // <|im_end|> closes the turn
        XCTAssertEqual(ex.promptLength, prompt.count)
        XCTAssertEqual(ex.line, 1)
        XCTAssertEqual(tok.decode(ex.tokens), promptText + "3 + 4 = 7.<|im_end|>")

        // Padded batch of two rows of 64 (the example repeats since the set has one example).
        let seqLen = 96
        let L = ex.tokens.count, P = ex.promptLength
        XCTAssertLessThan(L, seqLen)
        let batcher = try SFTBatcher(dataset: data, seqLen: seqLen, batchTokens: 2 * seqLen + 5, packing: false,
                                     padId: 0, seed: 1)
        let b = batcher.nextBatch()
        XCTAssertEqual(b.rows, 2)
        XCTAssertEqual(b.tokens.count, 2 * seqLen)
        for r in 0..<2 {
            let row = Array(b.tokens[r * seqLen..<(r + 1) * seqLen])
            XCTAssertEqual(Array(row[..<L]), ex.tokens)
            XCTAssertEqual(Array(row[L...]), [Int](repeating: 0, count: seqLen - L))
            // Position t predicts token t+1: trained exactly where t+1 is a completion token.
            let mask = Array(b.lossMask[r * seqLen..<(r + 1) * seqLen])
            let expected = (0..<seqLen).map { t -> Float in (t >= P - 1 && t <= L - 2) ? 1 : 0 }
            XCTAssertEqual(mask, expected)
            for t in 0..<seqLen - 1 { XCTAssertEqual(b.targets[r * seqLen + t], row[t + 1]) }
            XCTAssertEqual(b.targets[r * seqLen + seqLen - 1], 0)
        }
        XCTAssertEqual(b.predictedTokens, 2 * (L - P))
        XCTAssertEqual(b.exampleCount, 2)
        XCTAssertEqual(b.documentStarts, [[0], [0]])
        XCTAssertEqual(batcher.position, DataPosition(epoch: 2, index: 0))
    }

    func testPlainFormatAppendsEOSWhenKnown() throws {
        let tok = try tokenizer()
        let url = try jsonl(#"{"prompt": "Tom has 3 apples.", "completion": " He eats one."}"# + "\n\n" + #"{"completion": "Only text."}"#)
        var data = try SFTDataset.load(url, tokenizer: tok, format: .plain, seqLen: 100)
        XCTAssertEqual(data.examples.map(\.line), [1, 3])
        XCTAssertEqual(data.examples[0].tokens, tok.encode("Tom has 3 apples.") + tok.encode(" He eats one."))
        XCTAssertEqual(data.examples[1].promptLength, 0)

        tok.eosTokenId = 0
        data = try SFTDataset.load(url, tokenizer: tok, format: .plain, seqLen: 100)
        XCTAssertEqual(data.examples[0].tokens, tok.encode("Tom has 3 apples.") + tok.encode(" He eats one.") + [0])
        XCTAssertEqual(data.examples[0].promptLength, tok.encode("Tom has 3 apples.").count)
    }

    // MARK: Batching

    private func handDataset() -> SFTDataset {
        SFTDataset(path: "hand.jsonl", examples: [
            SFTExample(tokens: [10, 11, 12, 13], promptLength: 2, line: 1),
            SFTExample(tokens: [20, 21, 22], promptLength: 0, line: 2),
            SFTExample(tokens: [30, 31, 32, 33, 34, 35], promptLength: 1, line: 3),
        ])
    }

    /// Packing never splits an example, never predicts across a boundary, pads what is left.
    /// Seeds are picked so the first epoch's order is known; 6 + 3 > 8 and 6 + 4 > 8, so
    /// nothing from the next epoch fits in the second row.
    func testPackedAndPaddedRowsByHand() throws {
        let data = handDataset()
        func seed(giving order: [Int]) -> UInt64 {
            (0..<UInt64(500)).first { SFTBatcher.permutation(count: 3, seed: $0, epoch: 0) == order }!
        }
        let identity = try SFTBatcher(dataset: data, seqLen: 8, batchTokens: 16, packing: true, padId: -1,
                                      seed: seed(giving: [0, 1, 2]))
        let b = identity.nextBatch()
        // [10 11 12 13 | 20 21 22] fits in 8; [30..35] goes to row 2.
        XCTAssertEqual(b.tokens, [10, 11, 12, 13, 20, 21, 22, -1, 30, 31, 32, 33, 34, 35, -1, -1])
        // Row 1: t=1,2 predict 12,13 (completion); t=3 would predict 20, the next example: 0;
        // t=4,5 predict 21,22 (that prompt is empty, but its first token 20 is never predicted).
        XCTAssertEqual(b.lossMask, [0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
        XCTAssertEqual(b.targets, [11, 12, 13, 20, 21, 22, -1, -1, 31, 32, 33, 34, 35, -1, -1, -1])
        XCTAssertEqual(b.documentStarts, [[0, 4], [0]])
        XCTAssertEqual(b.exampleCount, 3)
        XCTAssertEqual(b.predictedTokens, 9)
        XCTAssertEqual(identity.position, DataPosition(epoch: 1, index: 0))

        let swapped = try SFTBatcher(dataset: data, seqLen: 8, batchTokens: 16, packing: true, padId: -1,
                                     seed: seed(giving: [1, 0, 2])).nextBatch()
        XCTAssertEqual(swapped.tokens, [20, 21, 22, 10, 11, 12, 13, -1, 30, 31, 32, 33, 34, 35, -1, -1])
        XCTAssertEqual(swapped.lossMask, [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])

        // Padded: one example per row; the third waits for the next batch.
        let padded = try SFTBatcher(dataset: data, seqLen: 8, batchTokens: 16, packing: false, padId: -1,
                                    seed: seed(giving: [0, 1, 2]))
        let p = padded.nextBatch()
        XCTAssertEqual(p.tokens, [10, 11, 12, 13, -1, -1, -1, -1, 20, 21, 22, -1, -1, -1, -1, -1])
        XCTAssertEqual(p.lossMask, [0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(padded.position, DataPosition(epoch: 0, index: 2))
    }

    /// Every epoch is a permutation, epochs differ, the same seed repeats, and a batcher rebuilt
    /// from a saved position continues exactly as the original.
    func testShuffleIsSeededAndResumesExactly() throws {
        let examples = (0..<10).map { SFTExample(tokens: [$0, 100 + $0, 200 + $0], promptLength: 1, line: $0 + 1) }
        let data = SFTDataset(path: "ten.jsonl", examples: examples)
        let e0 = SFTBatcher.permutation(count: 10, seed: 42, epoch: 0)
        let e1 = SFTBatcher.permutation(count: 10, seed: 42, epoch: 1)
        XCTAssertEqual(e0.sorted(), Array(0..<10))
        XCTAssertEqual(e1.sorted(), Array(0..<10))
        XCTAssertNotEqual(e0, e1)
        XCTAssertNotEqual(e0, Array(0..<10))
        XCTAssertEqual(e0, SFTBatcher.permutation(count: 10, seed: 42, epoch: 0))
        XCTAssertNotEqual(e0, SFTBatcher.permutation(count: 10, seed: 43, epoch: 0))

        func make(_ position: DataPosition = DataPosition()) throws -> SFTBatcher {
            // 3 rows of 4 tokens, padded: 3 examples per batch, so batches straddle epochs.
            try SFTBatcher(dataset: data, seqLen: 4, batchTokens: 12, packing: false, padId: -1, seed: 42, position: position)
        }
        let straight = try make()
        let all = (0..<8).map { _ in straight.nextBatch() }
        // The first epoch's examples come in e0's order, then e1's.
        let firsts = all.flatMap { b in (0..<3).map { b.tokens[$0 * 4] } }
        XCTAssertEqual(Array(firsts[0..<10]), e0)
        XCTAssertEqual(Array(firsts[10..<20]), e1)

        let first = try make()
        for _ in 0..<3 { _ = first.nextBatch() }
        XCTAssertEqual(first.position, DataPosition(epoch: 0, index: 9))
        let saved = try JSONDecoder().decode(DataPosition.self, from: JSONEncoder().encode(first.position))
        let resumed = try make(saved)
        for k in 3..<8 { XCTAssertEqual(resumed.nextBatch(), all[k], "batch \(k)") }
    }

    // MARK: Errors

    func testMissingCompletionNamesTheLine() throws {
        let url = try jsonl(#"{"prompt": "a", "completion": "b"}"# + "\n" + #"{"prompt": "a", "answer": "b"}"# + "\n")
        expectError(try SFTDataset.load(url, tokenizer: try tokenizer(), format: .chat, seqLen: 100),
                    contains: [url.path, "line 2", "\"completion\""])
    }

    func testInvalidJSONNamesTheLine() throws {
        let url = try jsonl(#"{"prompt": "a", "completion": "b"}"# + "\n\n" + #"{"prompt": "a", "completion": "b""# + "\n")
        expectError(try SFTDataset.load(url, tokenizer: try tokenizer(), format: .chat, seqLen: 100),
                    contains: [url.path, "line 3", "invalid JSON"])
        let notObject = try jsonl("[1, 2]\n")
        expectError(try SFTDataset.load(notObject, tokenizer: try tokenizer(), format: .plain, seqLen: 100),
                    contains: ["line 1", "JSON object"])
        let chatNoPrompt = try jsonl(#"{"completion": "b"}"#)
        expectError(try SFTDataset.load(chatNoPrompt, tokenizer: try tokenizer(), format: .chat, seqLen: 100),
                    contains: ["line 1", "\"prompt\""])
    }

    func testTooLongExampleErrorsOrIsDropped() throws {
        let tok = try tokenizer()
        let long = String(repeating: "apples and pears ", count: 20)
        let url = try jsonl([#"{"prompt": "Q", "completion": "A"}"#,
                             #"{"prompt": "\#(long)", "completion": "A"}"#,
                             #"{"prompt": "R", "completion": "B"}"#].joined(separator: "\n"))
        let length = SFTDataset.tokenize(prompt: long, completion: "A", line: 2, tokenizer: tok, format: .chat,
                                         template: .chatML).tokens.count
        XCTAssertGreaterThan(length, 40)
        expectError(try SFTDataset.load(url, tokenizer: tok, format: .chat, seqLen: 40),
                    contains: [url.path, "line 2", "\(length) tokens", "context of 40", "--seq-len", "--drop-long"])
        let kept = try SFTDataset.load(url, tokenizer: tok, format: .chat, seqLen: 40, dropLong: true)
        XCTAssertEqual(kept.examples.map(\.line), [1, 3])
        XCTAssertEqual(kept.droppedLines, [2])
        // Exactly the context length fits.
        XCTAssertEqual(try SFTDataset.load(url, tokenizer: tok, format: .chat, seqLen: length).examples.count, 3)
        // All dropped: an empty dataset.
        expectError(try SFTDataset.load(url, tokenizer: tok, format: .chat, seqLen: 5, dropLong: true),
                    contains: [url.path, "no examples", "--seq-len"])
    }

    func testEmptyDatasetAndBadBatchSizes() throws {
        let url = try jsonl("\n  \n")
        expectError(try SFTDataset.load(url, tokenizer: try tokenizer(), format: .plain, seqLen: 10),
                    contains: [url.path, "no examples"])
        expectError(try SFTDataset.load(scratch.appendingPathComponent("missing.jsonl"), tokenizer: try tokenizer(), format: .plain, seqLen: 10),
                    contains: ["missing.jsonl", "cannot read"])
        expectError(try SFTBatcher(dataset: handDataset(), seqLen: 8, batchTokens: 7, packing: true, padId: 0, seed: 0),
                    contains: ["--batch-tokens", "--seq-len"])
        expectError(try SFTBatcher(dataset: handDataset(), seqLen: 4, batchTokens: 8, packing: true, padId: 0, seed: 0),
                    contains: ["hand.jsonl", "line 3", "6 tokens"])
    }
}
