import Tensors

/// A training run that cannot go on: a one-line message saying what is wrong and, where there is
/// one, the fix. Problems with an input file use `FormatError` (which names the file) instead.
package struct TrainError: UserFacingError, Equatable {
    package let message: String

    package init(_ message: String) {
        self.message = message
    }

    package var description: String { message }
}
