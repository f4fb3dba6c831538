import TestSupport
import XCTest
@testable import Reasoning

final class ArithTeacherRecipeTests: XCTestCase {
    func testTheEmbeddedRecipeRoundTripsAndScoresTheDefaultTaskLevel() throws {
        let recipe = ArithTeacherRecipe.embedded
        let json = try JSONEncoder().encode(recipe)
        XCTAssertEqual(try JSONDecoder().decode(ArithTeacherRecipe.self, from: json), recipe)
        let keys = Set((try JSONSerialization.jsonObject(with: json) as! [String: Any]).keys)
        XCTAssertTrue(keys.isSuperset(of: ["train_levels", "eval_level", "batch_tokens", "seq_len", "lr"]))
        XCTAssertEqual(recipe.evalTask.levels, ArithTask.default.levels)
        // The curriculum starts from one step and reaches the scored level.
        XCTAssertEqual(recipe.trainLevels.map(\.minSteps).min(), 1)
        XCTAssertEqual(recipe.trainLevels.map(\.maxSteps).max(), recipe.evalLevel.maxSteps)
        for level in recipe.trainLevels + [recipe.evalLevel] { XCTAssertNoThrow(try level.validate()) }
        // Every example of the scored level fits a row with its EOS, so sft never drops one.
        let dir = try makeScratchDirectory("recipe-tokenizer")
        let tokenizer = try ArithTask.trainTokenizer().write(to: dir)
        let longest = try recipe.evalTask.problems(split: .validation, count: 500, seed: 0)
            .map { tokenizer.encode($0.prompt).count + tokenizer.encode($0.completion).count + 1 }.max()!
        XCTAssertLessThanOrEqual(longest, recipe.seqLen)
        XCTAssertGreaterThan(longest, recipe.seqLen - 12, "rows are not much wider than the longest example")
        XCTAssertEqual(recipe.trainTokens, recipe.steps * recipe.batchTokens)
    }
}
