app_name = "classifier"
urlpatterns: list = []
