"""
Vocabularies as the text encoder sees them, and vocabulary files that are not files: names that
tokenise identically (full-width letters, ligatures, HTML entities) are duplicates; a FIFO, a device or
an oversized file is refused by name without blocking or reading it whole.
"""
import os
import signal
import unicodedata

import open_clip
import pytest

from gridclip import vocabulary as V
from gridclip.vocabulary.files import MAX_VOCABULARY_FILE_BYTES
from gridclip.vocabulary.names import clean_category_name, text_encoder_form


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("RN50-quickgelu")


def _tokens(tokenizer, name):
    return tokenizer.encode(clean_category_name(name))


@pytest.mark.parametrize("first, second, same_tokens", [
    ("red solid circle", "ｒｅｄ solid circle", True),  # full-width letters
    ("fish", "ﬁsh", True),  # a ligature
    ("fish & chips", "Fish &amp; Chips", True),  # an HTML entity (the tokenizer unescapes it)
    ("café", "cafe\u0301", True),  # composed / decomposed accent
    # a full-width underscore: NFKC makes it '_', which ViLD's cleaning makes ' ' (the tokenizer alone
    # would keep '＿', a near-duplicate that still splits the class)
    ("traffic light", "Ｔｒａｆｆｉｃ＿Ｌｉｇｈｔ", False),
])
def test_names_that_tokenise_alike_are_duplicates(tokenizer, first, second, same_tokens):
    assert (_tokens(tokenizer, first) == _tokens(tokenizer, second)) == same_tokens
    with pytest.raises(ValueError, match="duplicate category names: .*as the text encoder sees them"):
        V.validate_vocabulary([first, second], "test")
    with pytest.raises(ValueError, match="duplicate"):
        V.parse_custom_vocabulary(f"{first},{second}")


def test_distinct_names_stay_distinct_and_are_kept_as_typed(tokenizer):
    names = ["red solid circle", "red solid circles", "blue solid circle", "ｒｅｄ striped square", "c++", "a & b"]
    assert V.validate_vocabulary(names, "test") == names  # the stored name is the typed one
    forms = [text_encoder_form(n) for n in names]
    assert len(set(forms)) == len(forms)


def test_text_encoder_form_equals_open_clips_cleaning():
    from open_clip.tokenizer import _clean_lower  # the tokenizer's clean_fn ("lower")

    samples = V.lvis_v1_class_names() + V.coco_class_names() + [
        "Fish &amp; Chips", "ﬁsh", "naïve  Café", "ｒｅｄ solid circle", "bat_(animal)", "Cow/Sheep", "l'oréal"]
    for name in samples:
        expected = unicodedata.normalize("NFKC", _clean_lower(clean_category_name(unicodedata.normalize("NFKC", name))))
        assert text_encoder_form(name) == expected.rstrip(".").strip(), name


@pytest.fixture
def alarm():
    """Fail instead of hanging for ever if a read blocks."""
    def on_alarm(signum, frame):
        raise TimeoutError("reading the vocabulary blocked")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_fifo_vocabulary_file_is_refused_without_blocking(tmp_path, alarm):
    fifo = tmp_path / "names.txt"
    os.mkfifo(fifo)
    for read in (V.resolve_vocabulary, V.parse_custom_vocabulary, V.read_vocabulary_file):
        with pytest.raises(ValueError, match=f"{fifo} is a FIFO .*not a regular file"):
            read(str(fifo))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_vocabulary_file_is_refused_without_reading(alarm):
    with pytest.raises(ValueError, match="/dev/zero is a character device, not a regular file"):
        V.resolve_vocabulary("/dev/zero")


def test_oversized_vocabulary_file_is_refused(tmp_path):
    big = tmp_path / "names.txt"
    with open(big, "wb") as f:
        f.write(b"cat\n")
        f.truncate(MAX_VOCABULARY_FILE_BYTES + 1)  # sparse: instant
    with pytest.raises(ValueError, match=f"{big} is larger than {MAX_VOCABULARY_FILE_BYTES} bytes"):
        V.resolve_vocabulary(str(big))
    small = tmp_path / "small.txt"
    small.write_text("cat\ndog\n")
    assert V.resolve_vocabulary(str(small)) == ["cat", "dog"]
