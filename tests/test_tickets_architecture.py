"""The work-order seed files load (the pure-module import check is in
test_architecture.py)."""

from tickets.knowledge import load_knowledge, search_terms


def test_knowledge_seed_covers_the_enquiry_topics_of_the_domain():
    topics = {a.topic for a in load_knowledge()}
    assert {"电价", "电费", "停电信息", "业扩报装", "用电变更", "计量", "安全用电"} <= topics


def test_knowledge_query_terms_split_chinese_runs_into_pairs():
    assert search_terms("电费怎么交") [:2] == ["电费怎么交", "电费"]
    assert search_terms("") == []
